"""Spoken digits: ours (the `fsdd-fast` preset) vs diffusers' UNet1DModel, same data, same wall budget.

Both train on `fsdd:PATH@train` (2,700 clips, 8 kHz, 8192 samples) for `--minutes` of wall time each, one after
the other in this process, alone on the machine, with the same batch (32), AdamW with 200 warmup steps and
cosine decay over the budget (learning rate: the preset's 2e-3 for ours, 1e-3 for the peer), grad clip 1 and
EMA 0.999:

- ours: `rediffuse train --preset fsdd-fast` (a class-conditional patched 2-D UNet on 64 x 64 log-mel images,
  EDM), sampled as `rediffuse sample` samples it: with the run's recommended sampling, the preset's
  (euler-ancestral, 18 steps, guidance 1.5: 36 network evaluations), decoded to clips by Griffin-Lim (included
  in the real-time factor) and scaled by the level gain the run fitted after training;
- the peer a user would pick: diffusers' `UNet1DModel` shaped as Dance Diffusion's network (Evans et al.,
  Harmonai 2022: full-rate residual conv blocks, factor-2 cubic down-sampling per level, attention in the deep
  levels, Fourier time features concatenated to the input) scaled to 8192 samples, trained with diffusers'
  `DDPMScheduler` (1000 steps, cosine betas, epsilon prediction; the network reads t / 1000 as Dance Diffusion
  reads its continuous time) and sampled with `DDIMScheduler` (`--peer-steps`, default 50). It has no class
  input, so its class accuracy is not defined; IS and the FD say whether its clips are digits.

Then both sets of `--samples` clips are scored by the project's FSDD classifier (log-mel features, trained on
`@train`): FD against the training features with the held-out real data's FD as the floor, precision / recall,
IS and modified IS, and for ours the class accuracy of the requested labels; and by a second classifier of
another family that cannot have learned to forgive artefacts (`rediffuse.evaluation.features.cepstral`: logistic
regression on MFCC statistics fitted on clean `@train` clips): its accuracy, FD / its floor and recall. The
level (median RMS and peak) and silence (the quietest quarter of frames in dB below the loudest) of the clips
sit beside the held-out recordings', and ours' per-clip RMS and peak distributions are compared with theirs on
the log scale (geometric-mean ratio, spread, quantiles: `evaluation.metrics.level_match`). Training clips/s is
steps x batch over the training wall time; the real-time factor is seconds of audio generated per second of wall
time when drawing `--rtf-clips` clips in one batch. Targets (issue 41, 20 minutes): class accuracy >= 0.85 on
both classifiers, FD <= 5 x each floor, per-clip RMS and peak within 10% of the recordings' (geometric mean and
spread), silence <= -80 dB, sampling >= 10x faster than real time.

Each model's results go atomically to OUT/<model>.json; a rerun with the same settings reuses them (`--fresh`
starts over). OUT/table.md and OUT/results.json hold the outcome; OUT/<model>/ the run and its WAVs.

    python benchmarks/audio_vs_peer.py --data fsdd:/work/shared/data/fsdd/recordings [--minutes 20] \\
        [--samples 500] [--out runs/audio-bench]
    python benchmarks/audio_vs_peer.py --data fsdd:PATH --steps 3 --samples 20 --peer-steps 5  # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import rediffuse
from rediffuse.config import TrainConfig
from rediffuse.data.audio import load_audio, write_wav
from rediffuse.evaluation.audio_opinion import (SECOND, figures, level_error, level_matches, match_markdown, scores,
                                                second_classifier)
from rediffuse.evaluation.evaluate import classifier_inputs, sample_metrics
from rediffuse.evaluation.features import extract_features, load_or_train_classifier, load_split
from rediffuse.io import atomic_write_json, atomic_write_text
from rediffuse.presets import SAMPLING, preset
from rediffuse.train import train

MODELS = ("ours", "peer")
LABELS = {"ours": "ours (fsdd-fast, log-mel UNet + EDM)", "peer": "diffusers UNet1DModel + DDPM/DDIM"}
BATCH, LR, WARMUP, EMA = 32, 1e-3, 200, 0.999
COLUMNS = ("model", "params", "steps", "train clips/s", "NFE", "real-time factor", "class acc.", "FD", "FD / floor",
           "precision", "recall", "IS", "mIS", "acc. (2nd)", "FD / floor (2nd)", "recall (2nd)", "RMS", "peak",
           "silence (dB)", "CPP (dB)")


def peer_network(length: int) -> torch.nn.Module:
    """Dance Diffusion's UNet1DModel layout at `length` samples: 7 levels of 16-128 channels (3.1M parameters)."""
    from diffusers import UNet1DModel

    return UNet1DModel(sample_size=length, in_channels=1, out_channels=1, extra_in_channels=16,
                       time_embedding_type="fourier", time_embedding_dim=16, flip_sin_to_cos=True,
                       use_timestep_embedding=False, block_out_channels=(16, 16, 32, 32, 64, 64, 128),
                       down_block_types=("DownBlock1DNoSkip",) + ("DownBlock1D",) * 3 + ("AttnDownBlock1D",) * 3,
                       up_block_types=("AttnUpBlock1D",) * 3 + ("UpBlock1D",) * 3 + ("UpBlock1DNoSkip",),
                       mid_block_type="UNetMidBlock1D")


def learning_rate(step: int, total: float) -> float:
    """Linear warmup then cosine decay over `total` steps (the shape our loop uses for minute budgets)."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP) / max(1.0, total - WARMUP))))


def train_peer(args: argparse.Namespace, x: torch.Tensor) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the peer for the wall budget (or --steps); (EMA network, steps, clips/s, params)."""
    from diffusers import DDPMScheduler

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    net = peer_network(x.shape[-1])
    ema = copy.deepcopy(net).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    opt = torch.optim.AdamW(net.parameters(), lr=LR)
    budget = args.minutes * 60.0
    started, step, expected = time.perf_counter(), 0, float(args.steps or 10**9)
    while True:
        elapsed = time.perf_counter() - started
        if (args.steps and step >= args.steps) or (not args.steps and elapsed >= budget):
            break
        if not args.steps and step >= 50:  # the cosine decays over the steps the budget is expected to hold
            expected = step * budget / elapsed
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, expected)
        batch = x[torch.randint(len(x), (BATCH,), generator=gen)]
        noise = torch.randn(batch.shape, generator=gen)
        t = torch.randint(1000, (BATCH,), generator=gen)
        noisy = sched.add_noise(batch, noise, t)
        loss = (net(noisy, t.float() / 1000).sample - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - EMA)
        step += 1
    wall = time.perf_counter() - started
    params = sum(p.numel() for p in net.parameters())
    return ema, {"steps": step, "train_s": wall, "clips_per_s": step * BATCH / wall, "params": params}


@torch.no_grad()
def sample_peer(net: torch.nn.Module, n: int, length: int, steps: int, seed: int) -> torch.Tensor:
    """n clips from the peer with DDIM (eta 0) in `steps` steps, in batches of 100."""
    from diffusers import DDIMScheduler, DDPMScheduler

    sched = DDIMScheduler.from_config(DDPMScheduler(num_train_timesteps=1000,
                                                    beta_schedule="squaredcos_cap_v2").config)
    sched.set_timesteps(steps)
    out = []
    for start in range(0, n, 100):
        gen = torch.Generator().manual_seed(seed + start)
        x = torch.randn((min(100, n - start), 1, length), generator=gen)
        for t in sched.timesteps:
            eps = net(x, t.float().expand(len(x)) / 1000).sample
            x = sched.step(eps, t, x).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)


def sample_ours(run: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n class-balanced clips from our run with the preset's sampler and guidance, decoded to clips (Griffin-Lim
    for the log-mel route) as `rediffuse sample` writes them; (clips, labels)."""
    cond = torch.arange(n) % 10
    return run.sample(n, cond, seed=seed, batch_size=100, device="cpu"), cond  # the run's recommended sampling


def preset_nfe() -> int:
    """Network evaluations per clip of the preset's sampling (Heun: 2 per step but the last; guidance doubles)."""
    plan = SAMPLING["fsdd-fast"]
    per_step = 2 * plan["steps"] - 1 if plan["sampler"] == "heun" else plan["steps"]
    return per_step * (2 if plan.get("guidance", 1.0) != 1.0 else 1)


def real_time_factor(draw: Any, clips: int, length: int, rate: int) -> float:
    """Seconds of audio per second of wall time for one call of draw(clips)."""
    started = time.perf_counter()
    draw(clips)
    return clips * length / rate / (time.perf_counter() - started)


def measure(args: argparse.Namespace, model: str, scorer: dict[str, Any]) -> dict[str, Any]:
    """Train, sample and score one model (or reuse OUT/<model>.json from the same settings)."""
    saved = args.out / f"{model}.json"
    if saved.is_file() and not args.fresh:
        row = json.loads(saved.read_text())
        if row.get("settings") == settings(args):
            return row
    out = args.out / model
    if out.exists():
        shutil.rmtree(out)  # a half-trained run of an earlier attempt: its budget would not be comparable
    spec = f"{args.data}@train"
    if model == "ours":
        values = preset("fsdd-fast")
        values.update(data=spec, out=str(out), seed=args.seed, progress=False, level_clips=args.level_clips,
                      minutes=None if args.steps else args.minutes, steps=args.steps or 10**9)
        started = time.perf_counter()
        result = train(TrainConfig.from_dict(values))
        wall = time.perf_counter() - started
        loaded = rediffuse.load(out, device="cpu")
        row: dict[str, Any] = {"steps": result.step, "train_s": wall, "clips_per_s": result.step * BATCH / wall,
                               "params": sum(p.numel() for p in loaded.model.parameters())}
        x, cond = sample_ours(loaded, args.samples, args.seed)
        nfe = preset_nfe()
        rtf = real_time_factor(lambda k: sample_ours(loaded, k, args.seed + 1), args.rtf_clips, 8192, 8000)
    else:
        net, row = train_peer(args, load_audio(spec).x)
        x, cond = sample_peer(net, args.samples, 8192, args.peer_steps, args.seed), None
        nfe = args.peer_steps
        rtf = real_time_factor(lambda k: sample_peer(net, k, 8192, args.peer_steps, args.seed + 1),
                               args.rtf_clips, 8192, 8000)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(min(10, len(x))):
        write_wav(out / f"sample-{i:04d}.wav", x[i].numpy(), 8000)
    cnn = sample_metrics(scorer["classifier"], classifier_inputs(x, "fsdd", 8000), cond, scorer["real"],
                         ("fd", "prdc", "acc", "is"))
    second = scores(scorer["second"], x, cond, scorer["second_real"])
    row.update(model=model, nfe=nfe, rtf=rtf, scores=cnn, second=second, levels=figures(x),
               level_match=level_matches(x, scorer["heldout_clips"]), settings=settings(args))
    atomic_write_json(saved, row)
    return row


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that define a result (a saved result is reused only under the same ones)."""
    return {k: getattr(args, k) for k in ("data", "minutes", "steps", "samples", "peer_steps", "seed", "level_clips")}


def table(rows: list[dict[str, Any]], floor: dict[str, float], args: argparse.Namespace) -> str:
    """The markdown table, the floor row and the target checks."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    f2 = floor["second"]
    for r in rows:
        s, s2, lv = r["scores"], r["second"], r["levels"]
        acc = f"{s['class_accuracy']:.3f}" if "class_accuracy" in s else "n/a (unconditional)"
        acc2 = f"{s2['class_accuracy']:.3f}" if "class_accuracy" in s2 else "n/a"
        cells = [LABELS[r["model"]], f"{r['params']:,}", str(r["steps"]), f"{r['clips_per_s']:.0f}", str(r["nfe"]),
                 f"{r['rtf']:.1f}x", acc, f"{s['fd']:.2f}", f"{s['fd'] / floor['fd']:.1f}", f"{s['precision']:.3f}",
                 f"{s['recall']:.3f}", f"{s['inception_score']:.2f}", f"{s['modified_inception_score']:.2f}", acc2,
                 f"{s2['fd'] / f2['fd']:.1f}", f"{s2['recall']:.3f}", f"{lv['rms']:.4f}", f"{lv['peak']:.3f}",
                 f"{lv['silence_db']:.0f}", f"{lv['cpp_db']:.2f}" if "cpp_db" in lv else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lv = floor["levels"]
    lines.append(f"| held-out real clips (floor) | | | | | | {floor['class_accuracy']:.3f} | {floor['fd']:.2f} | 1.0 | "
                 f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['inception_score']:.2f} | "
                 f"{floor['modified_inception_score']:.2f} | {f2['class_accuracy']:.3f} | 1.0 | {f2['recall']:.3f} | "
                 f"{lv['rms']:.4f} | {lv['peak']:.3f} | {lv['silence_db']:.0f} | {lv['cpp_db']:.2f} |")
    ours = rows[0]
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    return "\n".join([
        f"Same data ({args.data}@train), budget {budget} per model, batch {BATCH}, "
        f"lr {preset('fsdd-fast')['lr']:g} (ours) / {LR:g} (peer), seed {args.seed}; "
        f"{args.samples} samples each, scored by the project's FSDD classifier and by a second one of another "
        f"family ({SECOND}, fitted on clean @train clips: held-out accuracy {f2['heldout_accuracy']:.3f}); "
        f"real-time factor over {args.rtf_clips} clips in one batch; silence: the quietest quarter of frames in dB "
        "below the loudest; CPP: the cepstral peak prominence, how far the pitch harmonics stand out (white noise "
        "about 5.8 dB; medians over clips).", "", *lines, "", "- ours: " + targets(ours, floor),
        *(match_markdown(ours["level_match"]) if "level_match" in ours else []), ""])


def targets(row: dict[str, Any], floor: dict[str, Any]) -> str:
    """Issue 41's targets for one model's row, each met or not."""
    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    s, s2, lv = row["scores"], row["second"], row["levels"]
    accs = (s["class_accuracy"], s2["class_accuracy"])
    ratios = (s["fd"] / floor["fd"], s2["fd"] / floor["second"]["fd"])
    level = level_error(row["level_match"]) if "level_match" in row else float("nan")  # rows saved before it
    return (f"class accuracy {accs[0]:.3f} / {accs[1]:.3f} (target >= 0.85 on both: {mark(min(accs) >= 0.85)}), "
            f"FD / floor {ratios[0]:.1f} / {ratios[1]:.1f} (target <= 5 on both: {mark(max(ratios) <= 5)}), "
            f"per-clip level off by {level:.1%} at most (geometric mean and spread of RMS and peak; target <= 10%: "
            f"{mark(level <= 0.1)}), silence "
            f"{lv['silence_db']:.0f} dB (target <= -80: {mark(lv['silence_db'] <= -80)}), real-time factor "
            f"{row['rtf']:.1f}x (target >= 10x: {mark(row['rtf'] >= 10)})")



def parse(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options (SystemExit 2 with a one-line message for bad ones)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    p.add_argument("--data", required=True, metavar="fsdd:PATH", help="the FSDD recordings (split @train/@heldout)")
    p.add_argument("--minutes", type=float, default=20.0, help="wall budget per model (default: 20)")
    p.add_argument("--steps", type=int, default=None, help="train each model this many steps instead (smoke runs)")
    p.add_argument("--samples", type=int, default=500, help="samples per model for the scores (default: 500)")
    p.add_argument("--peer-steps", type=int, default=50, help="the peer's DDIM steps (default: 50)")
    p.add_argument("--rtf-clips", type=int, default=30, help="clips drawn to time sampling (default: 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level-clips", type=int, default=preset("fsdd-fast").get("level_clips", 500),
                   help="clips our run draws after training to fit its level gain (default: the preset's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", type=Path, default=Path("runs/audio-bench"))
    p.add_argument("--fresh", action="store_true", help="retrain both models even if results are saved")
    args = p.parse_args(argv)
    if not args.data.startswith("fsdd:") or args.data.endswith(("@train", "@heldout")):
        p.error(f"--data must be fsdd:PATH without a split suffix (the benchmark uses @train and @heldout), "
                f"got {args.data!r}")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1) or min(args.samples, args.rtf_clips) < 1:
        p.error("--minutes must be > 0, --steps, --samples and --rtf-clips >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and write the table; the results."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    path = args.data.partition(":")[2]
    classifier, _ = load_or_train_classifier("fsdd", path, device="cpu")
    split = load_split("fsdd", path)
    second, second_real, (held_x, held_y) = second_classifier(path)
    scorer = {"classifier": classifier, "real": extract_features(classifier, split.train_x), "second": second,
              "second_real": second_real, "heldout_clips": held_x}
    rows = [measure(args, model, scorer) for model in MODELS]
    floor = sample_metrics(classifier, split.heldout_x, split.heldout_y, scorer["real"], ("fd", "prdc", "acc", "is"))
    floor["second"] = {**scores(second, held_x, held_y, second_real), "heldout_accuracy": second.heldout_accuracy}
    floor["levels"] = figures(held_x)
    text = table(rows, floor, args)
    print(text)
    atomic_write_text(args.out / "table.md", text)
    results = {"rows": rows, "floor": floor, "settings": settings(args)}
    atomic_write_json(args.out / "results.json", results)
    return results


if __name__ == "__main__":
    main()
