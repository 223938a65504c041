"""The `sample` verb: draw from a trained run through `Run.draw` and write what its modality writes: points as
.npy with scatter and reverse-process pictures, images as a grid .png and .npz (the reverse process as a GIF),
audio as WAVs with an .npz and pictures, text as .jsonl or .txt (`rediffuse.modalities`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

from torch import Tensor
from tqdm import tqdm

from rediffuse import checkpoint, distributed, runs, samplers
from rediffuse.core import schedules
from rediffuse.distributed import DEVICE_HELP, World
from rediffuse.cli.common import PROG, finite_float, device_name
from rediffuse.cli.outputs import refuse_overwrite
from rediffuse.cli.sample_text import add_text_flags
from rediffuse.errors import UsageError
from rediffuse.config import TrainConfig, resolve_device
from rediffuse.data.dataset import build_data
from rediffuse.modalities import Drawn, Extras
from rediffuse.samplers.request import SamplingRequest, Step
from rediffuse.sampling.run import Run


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `sample` on the `rediffuse` sub-command parser."""
    sample_p = verbs.add_parser("sample", parents=[common],
                                help="draw samples from a trained run (points, images, audio or text)",
                                description="Sample a trained run: points -> .npy + scatter and reverse-process "
                                            "PNGs; images -> grid .png + .npz; audio -> WAVs + .npz + "
                                            "spectrograms; text -> .jsonl or .txt.")
    sample_p.add_argument("run", type=Path, metavar="RUN", help="run folder (or one ckpt-<step> folder)")
    _add_sampling_flags(sample_p)
    add_text_flags(sample_p)
    sample_p.set_defaults(func=cmd_sample)


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default=None, choices=sorted(samplers.SAMPLERS),
                   help="points, image and audio runs: the sampler (default: the run's recommended sampling, "
                        "else heun; consistency for a `distill` run)")
    p.add_argument("--steps", type=int, default=None,
                   help="number of noise levels (default: the run's recommended, else 20; a `distill` run: 2; "
                        "text runs: reverse steps, default the length)")
    p.add_argument("--spacing", default=None, choices=[*schedules.SPACINGS, "tuned"],
                   help="sigma grid (default: the schedule's own; tuned: from `rediffuse tune-grid`)")
    p.add_argument("-n", "--num", type=int, default=None, dest="n",
                   help="number of samples (default: 5000 points, 64 images, 30 clips or 16 texts)")
    p.add_argument("--out", type=Path, default=None,
                   help="output: .npy for points, .png (a grid) or a folder (one PNG per image, the grid and "
                        ".npz beside it) for images, a folder or .wav for audio, .jsonl or .txt for text "
                        "(default: RUN/samples.npy, .png, samples/ or .jsonl)")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    p.add_argument("--class", type=int, dest="label", default=None, help="class label (conditional runs)")
    p.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale (1 = none; default: the run's recommended, else 1)")
    p.add_argument("--eta", type=finite_float, default=None,
                   help="the fresh noise of ddim, euler-ancestral and dpmpp-2m-sde, 0 (none: the ODE) to 1 (the "
                        "full posterior's) (default: the run's recommended, else the sampler's own)")
    p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=int, default=1000, help="samples per batch (default: 1000)")
    p.add_argument("--trajectory", type=Path, default=None, help="also write a GIF of the reverse process")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw weights, not the EMA")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it shows only on a terminal anyway)")


CLI_FLAGS = ("--class", "--guidance", "train with --conditional")  # how label errors name the flags


def cmd_sample(args: argparse.Namespace) -> int:
    if not args.run.exists():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    if args.run.is_file():
        raise UsageError(checkpoint.not_a_folder(args.run))
    for flag in ("steps", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.n is not None and args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    run = Run(runs.open(args.run, ema=args.ema))
    modality = run.modality
    text = dict(order=args.order, prompt=args.prompt, infill=args.infill, blank=args.blank, length=args.length)
    request = run.request(args.n, args.label, args.sampler, args.steps, args.guidance, args.seed, args.spacing,
                          args.batch_size, device=resolve_device(args.device), flags=CLI_FLAGS, eta=args.eta, **text)
    modality.check_request(run.spec, request, args.trajectory)
    out = args.out or modality.default_out(args.run)
    modality.check_out(out)
    trajectory = [] if args.trajectory is None else [args.trajectory]
    refuse_overwrite(modality.outputs(out, request.n, request.labels) + trajectory, args.overwrite)
    if modality.gaussian and distributed.is_main_process():  # under torchrun rank 0 talks
        run.grid(request)  # a missing tuned plan is named before the line below
        chosen = run.choice(args.sampler, args.steps, args.spacing, args.guidance, args.eta)
        print(f"{PROG}: drawing {request.n} samples with {chosen.describe()}", file=sys.stderr)
    with distributed.session(str(request.device)) as world:  # under torchrun the ranks split the batches
        request = dataclasses.replace(request, device=world.device(str(request.device)))
        bar = tqdm(total=request.n, desc="sampling", unit="sample", file=sys.stderr,
                   disable=True if not (args.progress and world.is_main) else None)
        written = draw_and_write(run, request, out, args.trajectory, args.blank, bar.update, world)
        bar.close()
    for path in written:
        print(path)
    return 0


def draw_and_write(run: Run, request: SamplingRequest, out: Path, trajectory: Path | None = None, blank: str = "_",
                   progress: Callable[[int], None] | None = None, world: World | None = None) -> list[Path]:
    """Draw a request and write what the run's modality writes at out (rank 0 only; others write nothing)."""
    modality = run.modality
    steps: list[Step] = []
    drawn = run.draw(request, steps.append if modality.keeps_steps(trajectory) else None, progress, world)
    if world is not None and not world.is_main:
        return []  # under torchrun rank 0 writes the files
    extras = Extras(trajectory, lambda: _reference_points(run.config), lambda k: redraw(run, request, k), blank)
    return modality.write(out, dataclasses.replace(drawn, steps=steps), run.spec, extras)


def redraw(run: Run, request: SamplingRequest, k: int) -> Drawn:
    """The first k samples of a request drawn again in one batch, with every step recorded."""
    steps: list[Step] = []
    labels = None if request.labels is None else request.labels[:k]
    drawn = run.draw(dataclasses.replace(request, n=k, labels=labels, batch_size=k), steps.append)
    return dataclasses.replace(drawn, steps=steps)


def _reference_points(config: TrainConfig, limit: int = 5000) -> Tensor | None:
    """Up to `limit` training points to draw under the samples (None if the data cannot be loaded now)."""
    try:
        x = build_data(dataclasses.replace(config, num_points=limit)).x
    except (ValueError, OSError) as err:
        print(f"{PROG}: warning: cannot load the training data for the plots ({err})", file=sys.stderr)
        return None
    return x[:limit]
