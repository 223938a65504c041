"""Named training recipes (`rediffuse train --preset NAME`): config values that a TOML file or flags override.

Each preset is measured on this project's reference machine (a 2-core CPU); docs/results.md has the numbers.
"""

from __future__ import annotations

from typing import Any

# what a run keeps of its preset's sampling (its `sampling` key)
RECOMMENDED = ("sampler", "steps", "spacing", "guidance", "eta")

PRESETS: dict[str, dict[str, Any]] = {
    # class-conditional UNet on scikit-learn's 8x8 digits (the demo): about 3 minutes on 2 quiet AVX2 cores
    # (~590 img/s); against the earlier 1300 steps at lr 2e-3 with dropout 0.1 (7 minutes on this machine),
    # 800 steps at lr 3e-3 kept accuracy 0.97 and dropout 0 kept it too while 16% faster (docs/results.md)
    "digits": dict(data="digits", net="unet", conditional=True, label_dropout=0.1, steps=800, batch_size=128,
                   lr=3e-3, lr_schedule="cosine", warmup_steps=100, ema_decay=0.999, schedule="edm",
                   parameterization="edm", weighting="edm", log_every=100, checkpoint_every=500,
                   net_kwargs={"channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
                               "attn_resolutions": [4], "dropout": 0.0}),
    # an MLP on 2-D moons: about 30 seconds
    "moons": dict(data="moons", steps=1500, batch_size=512, lr=3e-3, warmup_steps=50, ema_decay=0.99, net="mlp",
                  net_kwargs={"hidden": 128, "depth": 3, "emb_dim": 64}, schedule="edm", parameterization="edm",
                  weighting="edm", log_every=100, checkpoint_every=500),
    # class-conditional MNIST-sized grey images (28x28) in a 15-minute CPU budget (docs/results.md): a UNet with
    # a thin full-resolution level (16 channels; 64 at 14x14 and 7x7), EDM preconditioning and weighting, and
    # a cosine learning rate that decays over the time budget
    "mnist-fast": dict(net="unet", conditional=True, label_dropout=0.1, steps=1_000_000, minutes=15.0,
                       batch_size=64, lr=1e-3, lr_schedule="cosine", warmup_steps=200, ema_decay=0.999,
                       schedule="edm", parameterization="edm", weighting="edm", log_every=100,
                       checkpoint_every=1_000_000, checkpoint_minutes=2.0,
                       net_kwargs={"channels": 16, "channel_mults": [1, 4, 4], "num_res_blocks": 1,
                                   "attn_resolutions": [7], "emb_dim": 128}),
    # Tiny Shakespeare's characters in a 15-minute CPU budget: the best 15-minute model of
    # benchmarks/text_vs_autoregressive.py (docs/results.md, issue 40), which is the autoregressive transformer:
    # 2.20 held-out bits/char against <= 2.87 for block diffusion with 4-character blocks and <= 2.94 for masked
    # diffusion, the same network (nanoGPT's CPU "baby GPT" size: dim 128, depth 4, heads 4) with its GPU block
    # length, batch 16, lr 1e-3 (before issue 40 this preset was masked diffusion, dim 96, depth 3)
    "shakespeare-char": dict(objective="autoregressive", net="transformer", block_length=256, batch_size=16,
                             lr=1e-3, lr_schedule="cosine", warmup_steps=100, ema_decay=0.999, steps=1_000_000_000,
                             minutes=15.0, log_every=50, checkpoint_every=1_000_000_000, checkpoint_minutes=2.0,
                             net_kwargs={"dim": 128, "depth": 4, "heads": 4}),
    # class-conditional spoken digits (FSDD, 8 kHz, 1.024 s clips) in a 20-minute CPU budget (docs/results.md):
    # the spectrogram route, which beat the 1-D waveform UNet (FD 33 at 3 minutes against 81 at 6): 64 x 64 log-mel
    # images (n_fft 256, hop 128; Griffin-Lim back to sound) learned by a 2-D UNet that folds 4 x 4 patches into
    # channels (16 -> 8 -> 4 positions a side), EDM's noise levels and weighting as for images; lr 2e-3 beat
    # 1e-3 at 5 minutes (FD 12.5 against 13.9) and gave FD 6.9 / accuracy 0.96 at 20, and wider or finer nets lost;
    # after training, 1,000 clips drawn as recommended fit the level gain (3.6% standard error; about a minute)
    "fsdd-fast": dict(net="unet", audio_representation="mel", conditional=True, label_dropout=0.1, level_clips=1000,
                      steps=1_000_000_000, minutes=20.0, batch_size=32, lr=2e-3, lr_schedule="cosine",
                      warmup_steps=200, ema_decay=0.999, schedule="edm", parameterization="edm", weighting="edm",
                      log_every=100, checkpoint_every=1_000_000_000, checkpoint_minutes=2.0,
                      net_kwargs={"channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
                                  "attn_resolutions": [8], "patch_size": 4}),
    # the waveform route for comparison (`--preset fsdd-wave`): a 1-D UNet that folds 16 samples into channels,
    # then strides 4 and 4 (512 -> 128 -> 32 positions), EDM with its noise levels scaled by 0.08 = 0.04 / 0.5
    # (FSDD's waveform std over the 0.5 EDM's defaults assume): unscaled, samples keep a hiss floor
    "fsdd-wave": dict(net="unet1d", conditional=True, label_dropout=0.1, steps=1_000_000_000, minutes=20.0,
                      batch_size=32, lr=1e-3, lr_schedule="cosine", warmup_steps=200, ema_decay=0.999,
                      schedule="edm", parameterization="edm", weighting="edm", log_every=100,
                      schedule_kwargs={"sigma_min": 0.00016, "sigma_max": 6.4, "p_mean": -3.73, "p_std": 1.2},
                      checkpoint_every=1_000_000_000, checkpoint_minutes=2.0,
                      net_kwargs={"channels": 32, "channel_mults": [1, 2, 4], "factors": [4, 4], "patch_size": 16,
                                  "num_res_blocks": 1, "kernel_size": 5, "attn_lengths": [32]}),
}

# How each preset's models are sampled by default (the demo, the benchmarks): sampler, steps and grid.
SAMPLING: dict[str, dict[str, Any]] = {
    "digits": dict(sampler="heun", steps=18, spacing="default", seed=0),
    "moons": dict(sampler="heun", steps=18, spacing="default", seed=0),
    "mnist-fast": dict(sampler="euler-ancestral", steps=35, spacing="default", seed=0),  # stochastic: see results
    "shakespeare-char": dict(sampler="autoregressive", steps=256, seed=0),  # a token per step, key-value cached
    # the spectrogram route, 20 minutes: euler-ancestral, 18 steps, guidance 1.5 (36 NFE). Over 1,000 clips on two
    # training seeds (session 26) it keeps both classifiers' FD within 5x their floors and the second classifier's
    # recall at 0.76 (dpmpp-2m-sde at eta 0.25 and guidance 2, the session-24 choice: 0.55-0.63, with the loud
    # mode of per-clip levels blurred); its clips come out 0.81x too quiet, which the level gain fitted after
    # training corrects (docs/results.md, issue 41)
    "fsdd-fast": dict(sampler="euler-ancestral", steps=18, spacing="default", seed=0, guidance=1.5),
    "fsdd-wave": dict(sampler="heun", steps=18, spacing="default", seed=0),
}


def preset(name: str) -> dict[str, Any]:
    """A copy of the config values of a preset (ValueError naming the choices for an unknown name)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    values = dict(PRESETS[name])
    if values.get("objective", "gaussian") == "gaussian":  # text runs sample with their own defaults
        values["sampling"] = {k: v for k, v in SAMPLING.get(name, {}).items() if k in RECOMMENDED}
    values["net_kwargs"] = dict(values.get("net_kwargs", {}))
    values["schedule_kwargs"] = dict(values.get("schedule_kwargs", {}))
    return values
