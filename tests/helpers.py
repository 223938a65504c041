"""Helpers shared by several test modules (plain functions and constants; the shared fixtures are in conftest.py).

Test modules import them by name (`from helpers import assert_one_line_error`): tests/ is on sys.path, as pytest
puts a conftest's folder there. No test module imports another test module.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

from rediffuse import checkpoint, samplers
from rediffuse.core import consistency_models as consistency
from rediffuse.config import TrainConfig
from rediffuse.data.audio import write_wav
from rediffuse.core.denoisers import Denoiser
from rediffuse.evaluation.features import InceptionV3
from rediffuse.evaluation.metrics import sliced_wasserstein
from rediffuse.nets.mlp import MLP
from rediffuse.core.schedules import karras_sigmas

f64 = torch.float64


# ---------------------------------------------------------------- the command line's one-line errors


def assert_one_line_error(capsys, code, expected_code, *fragments):
    """The command returned expected_code and wrote one line, `rediffuse: error: ...`, holding every fragment."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rediffuse: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err


# ---------------------------------------------------------------- runs and their checkpoints

# A tiny MLP run on 2-D points (with dropout), for resume and precision tests.
POINTS = dict(data="8gaussians", num_points=500, batch_size=64, warmup_steps=5, log_every=4, checkpoint_every=5,
              keep_last=2, ema_decay=0.9, progress=False, net_kwargs={"hidden": 32, "depth": 2, "emb_dim": 16,
                                                                       "dropout": 0.1})


def final_checkpoint(run):
    """The newest checkpoint of a run, loaded."""
    return checkpoint.load(checkpoint.latest(run))


def assert_same_state(run_a, run_b):
    """Two runs' newest checkpoints hold the same step, weights, EMA, optimizer and RNG state, bit for bit."""
    a, b = final_checkpoint(run_a), final_checkpoint(run_b)
    assert a.step == b.step
    assert a.tensors.keys() == b.tensors.keys() == {"model", "ema", "optimizer", "rng"}
    for part in a.tensors:
        assert a.tensors[part].keys() == b.tensors[part].keys(), part
        for key, value in a.tensors[part].items():
            assert torch.equal(value, b.tensors[part][key]), f"{part}.{key} differs"
    assert a.meta["optimizer"] == b.meta["optimizer"]
    assert a.meta["model"] == b.meta["model"]


# ---------------------------------------------------------------- images through the Python API

IMAGE_NET = {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "mid_attention": False}
# `rediffuse.fit` keyword arguments for a small UNet run of a few steps.
SMALL = dict(net="unet", steps=4, batch_size=8, log_every=2, warmup_steps=1, progress=False, net_kwargs=IMAGE_NET)


def images(n: int = 40, h: int = 8, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images [n, 1, h, w] in [-1, 1] with 3 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, h, w, generator=g) * 2 - 1, torch.arange(n) % 3


# ---------------------------------------------------------------- audio

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"

# A tiny 1-D UNet for audio runs.
AUDIO_NET = {"channels": 8, "channel_mults": [1, 2], "factors": [4], "num_res_blocks": 1, "patch_size": 8,
             "kernel_size": 3, "mid_attention": False}


def tone(freq: float, rate: int, n: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine of `freq` Hz, n samples at `rate` Hz."""
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def write_fsdd(folder: Path, digits=range(3), speakers=("ann", "bob"), indices=range(7), n: int = 600) -> None:
    """A synthetic FSDD folder: one tone per digit."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in digits:
        for s in speakers:
            for i in indices:
                write_wav(folder / f"{d}_{s}_{i}.wav", tone(200 + 150 * d, 8000, n), 8000)


# ---------------------------------------------------------------- text


def markov_text(path: Path, n: int = 6000, stay: float = 0.85, seed: int = 0) -> tuple[Path, float]:
    """A text over 'abcd' whose next symbol is the previous + 1 with chance `stay`; (path, unigram entropy bits)."""
    rng = np.random.default_rng(seed)
    symbols = [0]
    for _ in range(n - 1):
        symbols.append((symbols[-1] + 1) % 4 if rng.random() < stay else int(rng.integers(4)))
    text = "".join("abcd"[s] for s in symbols)
    path.write_text(text)
    counts = np.bincount(symbols[: n * 9 // 10], minlength=4) / (n * 9 // 10)
    return path, float(-(counts * np.log2(counts)).sum())


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    """A tiny masked-objective run on the Markov text (written to tmp_path / 'm.txt')."""
    path, _ = markov_text(tmp_path / "m.txt")
    values = dict(data=f"text:{path}@train", objective="masked", out=str(tmp_path / "run"), block_length=32,
                  batch_size=32, steps=300, lr=3e-3, warmup_steps=20, log_every=50, checkpoint_every=1000,
                  ema_decay=0.99, progress=False, net_kwargs={"dim": 32, "depth": 2, "heads": 2})
    return TrainConfig(**{**values, **overrides})


# ---------------------------------------------------------------- samplers on exact mixtures

SIGMA_MAX, SIGMA_END = 80.0, 0.002


def reference_ode(mixture, x, sigma_max, sigma_end, denoiser=None):
    """The probability-flow ODE (of the mixture's exact denoiser, or of `denoiser`) solved by scipy's DOP853 at
    rtol 1e-10, in log-sigma time."""
    d = denoiser or mixture.denoiser()

    def rhs(u, y):
        xx = torch.from_numpy(y).reshape(x.shape)
        return (xx - d(xx, math.exp(u))).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(sigma_max), math.log(sigma_end)), x.reshape(-1).numpy(), method="DOP853",
                    rtol=1e-10, atol=1e-10)
    assert sol.success
    return torch.from_numpy(sol.y[:, -1]).reshape(x.shape)


def measured_order(problem, name, steps, nfe_per_step, **options):
    """(the slope of log error against log NFE, the errors) of a sampler on the `problem` fixture."""
    m, x, ref = problem
    errs, nfes = [], []
    for n in steps:
        grid = karras_sigmas(n + 1, SIGMA_END, SIGMA_MAX)  # ends at sigma_end: compare with the reference
        out = samplers.sample(m.denoiser(), x, grid, name, **options)
        errs.append(float((out - ref).pow(2).mean().sqrt()))
        nfes.append(n * nfe_per_step)
    return -np.polyfit(np.log(nfes), np.log(errs), 1)[0], errs


def chunked_sw(a, b, chunks):
    """Mean sliced Wasserstein distance over paired chunks (averaging tames the sampling noise)."""
    return float(np.mean([sliced_wasserstein(p, q, seed=i) for i, (p, q) in
                          enumerate(zip(a.chunk(chunks), b.chunk(chunks)))]))


# ---------------------------------------------------------------- consistency students

# `rediffuse distill` flags for short student runs of the conftest `teacher`.
STUDENT = ["--log-every", "4", "--checkpoint-every", "5", "--keep-last", "2", "--ct-stage-steps", "5",
           "--no-progress"]


def tuned_ring_student(mixture, sd, schedule, gen, fit_steps=600, tune_steps=2500, lr=2e-3, batch=256,
                       draw=None, exact=None, num_classes=None, guide=None):
    """An MLP first regressed on the exact denoiser (the teacher's weights), then tuned on fresh samples of the
    mixture by ECT, or with `guide` by consistency distillation from it (its gap stage advancing every
    tune_steps / 6 steps, the rate decaying as a cosine). `draw(n)` gives (x0, labels or None), `exact` the
    denoiser taking those labels."""
    torch.manual_seed(0)
    net = MLP(2, hidden=128, depth=3, emb_dim=64, num_classes=num_classes)
    denoiser = Denoiser(net, "edm", schedule, sd)
    f = consistency.ConsistencyFunction(net, "edm", schedule, sd, schedule.sigma_min,
                                        consistency.MID_SIGMA * consistency.unit(sd), "ect" if guide is None else "cd")
    draw = draw or (lambda n: (mixture.sample(n, gen), None))
    exact = exact or mixture.denoiser()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(fit_steps):
        x0, labels = draw(256)
        args = () if labels is None else (labels,)
        t = consistency.sample_levels(256, sd, schedule.sigma_min, schedule.sigma_max, generator=gen)
        x = x0 + t[:, None] * torch.randn(x0.shape, generator=gen, dtype=f64)
        weight = (t**2 + sd**2) / (t * sd) ** 2  # EDM's weighting
        loss = (weight[:, None] * (denoiser(x.float(), t, *args) - exact(x, t, *args).float()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    c = consistency.huber_constant(2, sd)
    for step in range(tune_steps):
        x0, labels = draw(batch)
        t = consistency.sample_levels(batch, sd, schedule.sigma_min, schedule.sigma_max, generator=gen)
        r = consistency.gap_level(t, min(step * 6 // tune_steps, 5), sd, schedule.sigma_min)
        noise = torch.randn(x0.shape, generator=gen)
        for group in opt.param_groups:  # cosine decay
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / tune_steps))
        loss = consistency.consistency_loss(f, x0.float(), t, r, noise, c, labels, guide).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return f.eval().requires_grad_(False)


# ---------------------------------------------------------------- Inception


def random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the FID Inception-v3's shapes, scaled so activations stay O(1); no BN counters."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in InceptionV3().state_dict().items() if "num_batches_tracked" not in k}
    state = {}
    for k, shape in shapes.items():
        if k.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("bn.weight"):
            state[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # bn.bias, running_mean
            state[k] = 0.1 * torch.randn(shape, generator=g)
    return state


def voice(amplitude: float = 0.2, start: float = 0.25, stop: float = 0.75) -> torch.Tensor:
    """A 140 Hz voice with ten harmonics and vibrato [1, 1, 8192], sounding between start and stop (fractions of
    the clip) under a Hann envelope, exact zeros elsewhere: a spoken word in a trimmed, padded recording."""
    t = torch.arange(8192, dtype=torch.float64) / 8000
    phase = 2 * math.pi * (140 * t - 10 / (6 * math.pi) * torch.cos(6 * math.pi * t))
    a, b = int(start * 8192), int(stop * 8192)
    envelope = torch.zeros(8192, dtype=torch.float64)
    envelope[a:b] = torch.hann_window(b - a, periodic=False, dtype=torch.float64)
    return (amplitude * envelope * sum(torch.sin(k * phase) / k for k in range(1, 11))).float().view(1, 1, -1)
