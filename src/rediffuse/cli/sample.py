"""The `sample` verb: draw from a trained run; points as .npy with scatter and reverse-process pictures,
images as a grid .png and .npz, optionally the reverse process as a GIF; audio as WAVs with an .npz and
pictures (`rediffuse.cli.sample_audio`); text as .jsonl or .txt (`rediffuse.cli.sample_text`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rediffuse import checkpoint, distributed, samplers, schedules, viz
from rediffuse.distributed import DEVICE_HELP
from rediffuse.cli.common import PROG, finite_float, device_name
from rediffuse.cli.outputs import image_paths, planned, refuse_overwrite
from rediffuse.cli.sample_audio import check_audio_out, sample_audio
from rediffuse.cli.sample_text import add_text_flags, cmd_sample_text
from rediffuse.errors import UsageError
from rediffuse.drawing import draw_setup, sample_labels, sampler_and_steps
from rediffuse.io import atomic_write_arrays
from rediffuse.samplers import generation as sampling
from rediffuse.config import TrainConfig, resolve_device
from rediffuse.data.dataset import build_data
from rediffuse.runs import load_run, run_info


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `sample` on the `rediffuse` sub-command parser."""
    sample_p = verbs.add_parser("sample", parents=[common], help="draw samples from a trained run",
                                description="Sample a trained run: points -> .npy + scatter and reverse-process "
                                            "PNGs; images -> grid .png + .npz; audio -> WAVs + .npz + "
                                            "spectrograms; text -> .jsonl or .txt.")
    sample_p.add_argument("run", type=Path, metavar="RUN", help="run folder (or one ckpt-<step> folder)")
    _add_sampling_flags(sample_p)
    add_text_flags(sample_p)
    sample_p.set_defaults(func=cmd_sample)


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default=None, choices=sorted(samplers.SAMPLERS),
                   help="points, image and audio runs: the sampler (default: heun; consistency for a "
                        "`distill` run)")
    p.add_argument("--steps", type=int, default=None,
                   help="number of noise levels (default: 20; a `distill` run: 2; text runs: reverse steps, "
                        "default the length)")
    p.add_argument("--spacing", default="default", choices=[*schedules.SPACINGS, "tuned"],
                   help="sigma grid (default: the schedule's own; tuned: from `rediffuse tune-grid`)")
    p.add_argument("-n", "--num", type=int, default=None, dest="n",
                   help="number of samples (default: 5000 points, 64 images, 30 clips or 16 texts)")
    p.add_argument("--out", type=Path, default=None,
                   help="output: .npy for points, .png (a grid) or a folder (one PNG per image, the grid and "
                        ".npz beside it) for images, a folder or .wav for audio, .jsonl or .txt for text "
                        "(default: RUN/samples.npy, .png, samples/ or .jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    p.add_argument("--class", type=int, dest="label", default=None, help="class label (conditional runs)")
    p.add_argument("--guidance", type=finite_float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=int, default=1000, help="samples per batch (default: 1000)")
    p.add_argument("--trajectory", type=Path, default=None, help="also write a GIF of the reverse process")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw weights, not the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it shows only on a terminal anyway)")


class Recorder:
    """A sampler callback that keeps (sigma, x, D(x)) of every step, across batches, on the CPU."""

    def __init__(self) -> None:
        self.steps: dict[int, list[tuple[float, Tensor, Tensor]]] = {}

    def __call__(self, info: dict[str, Any]) -> None:
        self.steps.setdefault(info["i"], []).append((info["sigma"], info["x"].cpu(), info["denoised"].cpu()))

    def frames(self) -> list[tuple[float, Tensor, Tensor]]:
        """(sigma, x, denoised) per step, batches concatenated."""
        return [(parts[0][0], torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts]))
                for _, parts in sorted(self.steps.items())]


def cmd_sample(args: argparse.Namespace) -> int:
    if not args.run.exists():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    if args.run.is_file():
        raise UsageError(checkpoint.not_a_folder(args.run))
    for flag in ("steps", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    info = run_info(args.run)
    kind = info["data"]["kind"]
    if kind == "text":
        return cmd_sample_text(args, info)
    if any(getattr(args, flag) is not None for flag in ("length", "prompt", "infill")):
        raise UsageError("--length, --prompt and --infill are for text runs; drop them for a points or image run")
    args.sampler, args.steps = sampler_and_steps(info, args.sampler, args.steps)
    if kind == "audio":
        out = args.out or args.run / "samples"
        check_audio_out(out)
        if args.trajectory is not None:
            raise UsageError("--trajectory is for points, image and text runs; drop it for an audio run")
    else:
        suffix = ".npy" if kind == "points" else ".png"
        out = args.out or args.run / f"samples{suffix}"
        if kind == "images" and out.suffix == "":
            if out.is_file():
                raise UsageError(f"--out {str(out)!r} is a file; give a folder for one PNG per image, or x.png")
        elif out.suffix.lower() != suffix:
            more = " (or a folder for one PNG per image)" if kind == "images" else ""
            raise UsageError(f"--out for a {kind} run must end in {suffix}{more}, got {str(out)!r}")
    n = args.n if args.n is not None else {"points": 5000, "audio": 30}.get(kind, 64)
    if n < 1:
        raise UsageError(f"-n must be >= 1, got {n}")
    cond = sample_labels(n, args.label, info["data"]["num_classes"], args.guidance,
                         ("--class", "--guidance", "train with --conditional"))
    refuse_overwrite(planned(kind, out, n, cond, args.trajectory), args.overwrite)
    device = resolve_device(args.device)
    with distributed.session(str(device)) as world:  # under torchrun the ranks split the batches
        device = world.device(str(device))
        denoiser, schedule, config = load_run(args.run, ema=args.ema, device=device)
        denoiser, options = draw_setup(info, denoiser, n=n, sampler=args.sampler, steps=args.steps,
                                       spacing=args.spacing, seed=args.seed, batch_size=args.batch_size, cond=cond,
                                       device=device, guidance=args.guidance, run_dir=args.run)
        bar = tqdm(total=n, desc="sampling", unit="sample", file=sys.stderr,
                   disable=True if not (args.progress and world.is_main) else None)
        options["progress"] = bar.update
        shape = info["data"]["shape"]
        if kind == "audio":
            written = sample_audio(denoiser, schedule, info["data"], out, options)
        else:
            written = (sample_points if kind == "points" else sample_images)(denoiser, schedule, shape, config,
                                                                             out, args.trajectory, options)
        bar.close()
    for path in written:
        print(path)
    return 0


def _reference_points(config: TrainConfig, limit: int = 5000) -> Tensor | None:
    """Up to `limit` training points to draw under the samples (None if the data cannot be loaded now)."""
    try:
        x = build_data(dataclasses.replace(config, num_points=limit)).x
    except (ValueError, OSError) as err:
        print(f"{PROG}: warning: cannot load the training data for the plots ({err})", file=sys.stderr)
        return None
    return x[:limit]


def sample_points(denoiser: Any, schedule: schedules.Schedule, shape: Sequence[int], config: TrainConfig,
                  out: Path, trajectory: Path | None, options: dict[str, Any]) -> list[Path]:
    """Sample a points run: the .npy, a scatter over the data and a strip of the reverse process."""
    recorder = Recorder()
    x = sampling.require_finite(distributed.generate(denoiser, schedule, shape, callback=recorder, **options).cpu())
    if not distributed.current().is_main:
        return []  # under torchrun rank 0 writes the files
    atomic_write_arrays(out, samples=x.numpy().astype(np.float32))
    data = _reference_points(config)
    snapshots = [(sigma, xs) for sigma, xs, _ in recorder.frames()] + [(0.0, x)]
    picks = viz.strip_picks([sigma for sigma, _ in snapshots], float(x.std()) or 1.0)
    scatter = viz.scatter_png(out.with_name(f"{out.stem}_scatter.png"), x, data,
                              title=f"{len(x)} samples ({options['sampler']}, {options['steps']} steps)")
    strip = viz.reverse_strip_png(out.with_name(f"{out.stem}_reverse.png"), [snapshots[i] for i in picks], data)
    written = [out, scatter, strip]
    if trajectory is not None:
        written.append(viz.points_gif(trajectory, snapshots, data))
    return written


def sample_images(denoiser: Any, schedule: schedules.Schedule, shape: Sequence[int], config: TrainConfig,
                  out: Path, trajectory: Path | None, options: dict[str, Any]) -> list[Path]:
    """Sample an image run: a grid .png (rows per class when conditional) and the samples as .npz."""
    x = sampling.require_finite(distributed.generate(denoiser, schedule, shape, **options).cpu()).clamp(-1, 1)
    if not distributed.current().is_main:
        return []  # under torchrun rank 0 writes the files
    cond = options["cond"]
    singles, grid, npz = image_paths(out, len(x), cond)
    if singles:
        out.mkdir(parents=True, exist_ok=True)
    written = [*viz.image_pngs(singles, x), viz.image_grid_png(grid, x, labels=cond)]
    arrays = {"samples": x.numpy()} if cond is None else {"samples": x.numpy(), "labels": cond.numpy()}
    written.append(atomic_write_arrays(npz, **arrays))
    if trajectory is not None:
        k = min(8, options["n"])
        recorder = Recorder()
        small = {**options, "n": k, "cond": None if cond is None else cond[:k], "progress": None}
        final = sampling.generate(denoiser, schedule, shape, callback=recorder, **small).cpu()
        frames = recorder.frames() + [(0.0, final, final)]
        written.append(viz.trajectory_gif(trajectory, frames))
    return written

