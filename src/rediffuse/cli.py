"""`rediffuse <verb>`: train, sample and demo, with TOML config files and flag overrides.

Errors are one line, `rediffuse: error: ...`, on stderr: exit code 2 for usage errors (flags, config files,
paths), 1 for runtime errors (bad data, corrupt checkpoints); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import numpy as np
import torch
from torch import Tensor

from rediffuse import checkpoint, cli_eval, cli_samplers, distributed, samplers, sampling, schedules, viz
from rediffuse.guidance import cfg_denoiser
from rediffuse.presets import PRESETS, SAMPLING, preset
from rediffuse.tuned_grids import load_grid, tuned_options
from rediffuse.train import (ConfigError, TrainConfig, TrainResult, build_data, data_kind, load_run, resolve_device,
                             run_info, saved_config, train)

PROG = "rediffuse"
ALIASES = {"parameterization": ["--param"]}
INTERRUPTED = 130
VERBS = ("train", "sample", "demo", "eval", "bench-samplers", "tune-grid")


class UsageError(Exception):
    """A bad command line, config file or path (exit code 2)."""


class ParseError(UsageError):
    """A command line that argparse rejects."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParseError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ParseError(message)


# --------------------------------------------------------------------------------------- arguments


def _json_table(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"hidden\": 512}}', got {text!r}")
    return value


def _float_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


FLAG_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "int | None": int, "float": float,
                                               "float | None": float, "dict": _json_table,
                                               "float | str": _float_or_auto}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size, ...), absent unless given."""
    for f in dataclasses.fields(TrainConfig):
        names = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        help_text = f"{f.metadata.get('help', '')} (default: {TrainConfig().to_dict()[f.name]!r})"
        if f.type == "bool":
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = f.name.upper() if f.type != "dict" else "JSON"
            parser.add_argument(*names, dest=f.name, type=FLAG_TYPES[str(f.type)], default=argparse.SUPPRESS,
                                metavar=metavar, help=help_text)


def build_parser() -> _Parser:
    """The `rediffuse` argument parser with its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    parser = _Parser(prog=PROG, parents=[common], description="Diffusion models as one denoiser D(x, sigma).")
    verbs = parser.add_subparsers(dest="verb", metavar="{" + ",".join(VERBS) + "}", parser_class=_Parser)
    verbs.required = True

    train_p = verbs.add_parser("train", parents=[common], help="train a model (points or images)",
                               description="Train a diffusion model; flags override the --config TOML file.")
    train_p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                         help="start from a named recipe (the --config file and flags override it)")
    train_p.add_argument("--config", type=Path, metavar="TOML", help="TOML file of config keys (flags override)")
    train_p.add_argument("--resume", action="store_true",
                         help="continue the run in --out from its newest checkpoint")
    _add_config_flags(train_p)
    train_p.set_defaults(func=cmd_train)

    sample_p = verbs.add_parser("sample", parents=[common], help="draw samples from a trained run",
                                description="Sample a trained run: points -> .npy + scatter and reverse-process "
                                            "PNGs; images -> grid .png + .npz.")
    sample_p.add_argument("run", type=Path, metavar="RUN", help="run folder (or one ckpt-<step> folder)")
    _add_sampling_flags(sample_p)
    sample_p.set_defaults(func=cmd_sample)

    demo_p = verbs.add_parser("demo", parents=[common], help="train and sample the demo model (digits, ~3.5 min)",
                              description="Train the demo model on built-in data, sample it and write pictures.")
    demo_p.add_argument("--data", default="digits", choices=sorted(DEMOS),
                        help="digits: class-conditional UNet on 8x8 digits; moons: 2-D MLP (default: digits)")
    demo_p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    demo_p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    demo_p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    demo_p.set_defaults(func=cmd_demo)
    cli_eval.add_parser(verbs, common)
    cli_samplers.add_parsers(verbs, common)
    return parser


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default="heun", choices=sorted(samplers.SAMPLERS), help="sampler (default: heun)")
    p.add_argument("--steps", type=int, default=20, help="number of noise levels (default: 20)")
    p.add_argument("--spacing", default="default", choices=[*schedules.SPACINGS, "tuned"],
                   help="sigma grid (default: the schedule's own; tuned: from `rediffuse tune-grid`)")
    p.add_argument("-n", "--num", type=int, default=None, dest="n",
                   help="number of samples (default: 5000 points or 64 images)")
    p.add_argument("--out", type=Path, default=None,
                   help="output: .npy for points, .png for images (default: RUN/samples.npy or .png)")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i depends only on (seed, i)")
    p.add_argument("--class", type=int, dest="label", default=None, help="class label (conditional runs)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per batch (default: 1000)")
    p.add_argument("--trajectory", type=Path, default=None, help="also write a GIF of the reverse process")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw weights, not the EMA")


# ------------------------------------------------------------------------------------------- train


def load_toml(path: Path) -> dict[str, Any]:
    """The keys of a TOML config file (UsageError if missing or malformed)."""
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} does not exist; give the path of a .toml file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"bad TOML in {path}: {err}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then (with --resume) the run's saved config, then the preset, the TOML file and the flags."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    from_file = load_toml(args.config) if args.config else {}
    flags = {k: getattr(args, k) for k in names if hasattr(args, k)}
    out = flags.get("out", from_file.get("out"))
    if out is None:
        raise UsageError("--out is required: the folder for the run's checkpoints and logs")
    values = TrainConfig().to_dict()
    saved = saved_config(out) if args.resume else None
    if saved is not None:
        values.update(saved.to_dict())
    if getattr(args, "preset", None):
        values.update(preset(args.preset))
    try:
        TrainConfig.from_dict(from_file)  # names an unknown or mistyped key of the file
    except ConfigError as err:
        raise UsageError(f"{args.config}: {err}") from None
    values.update(from_file)
    values.update(flags)
    return TrainConfig.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    main_rank = distributed.is_main_process()  # under torchrun only rank 0 talks
    if main_rank and args.resume and checkpoint.latest(config.out) is None:
        print(f"{PROG}: no checkpoint in {config.out}; starting a new run", file=sys.stderr)
    result = train(config, resume=args.resume)
    if main_rank:
        _report_training(result, config)
    return INTERRUPTED if result.stopped == "interrupted" else 0


def _report_training(result: TrainResult, config: TrainConfig) -> None:
    why = {"done": "finished", "time": "stopped at the time budget", "interrupted": "interrupted"}[result.stopped]
    unit = data_kind(config.data)
    print(f"{why} at step {result.step}; checkpoint {result.checkpoint} ({result.samples_per_s:.0f} {unit}/s)")
    if result.stopped != "done":
        print(f"continue with: {PROG} train --out {config.out} --resume")


# ------------------------------------------------------------------------------------------ sample


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


def _labels(args: argparse.Namespace, n: int, num_classes: int | None) -> Tensor | None:
    """Per-sample labels: --class for all, every class in turn for conditional runs, else None."""
    if num_classes is None:
        if args.label is not None or args.guidance != 1.0:
            raise UsageError("--class and --guidance need a class-conditional run (train with --conditional)")
        return None
    if args.label is not None:
        if not 0 <= args.label < num_classes:
            raise UsageError(f"--class must be in 0..{num_classes - 1}, got {args.label}")
        return torch.full((n,), args.label, dtype=torch.long)
    return torch.arange(n) % num_classes


def _save_array(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    if path.suffix == ".npz":
        np.savez(buf, **arrays)
    else:
        np.save(buf, arrays["samples"])
    checkpoint.atomic_write(path, buf.getvalue())


def cmd_sample(args: argparse.Namespace) -> int:
    if not args.run.exists():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    if args.run.is_file():
        raise UsageError(checkpoint.not_a_folder(args.run))
    for flag in ("steps", "batch_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    info = run_info(args.run)
    kind = info["data"]["kind"]
    suffix = ".npy" if kind == "points" else ".png"
    out = args.out or args.run / f"samples{suffix}"
    if out.suffix.lower() != suffix:
        raise UsageError(f"--out for a {kind} run must end in {suffix}, got {str(out)!r}")
    n = args.n if args.n is not None else (5000 if kind == "points" else 64)
    if n < 1:
        raise UsageError(f"-n must be >= 1, got {n}")
    device = resolve_device(args.device)
    with distributed.session(str(device)) as world:  # under torchrun the ranks split the batches
        device = world.device(str(device))
        denoiser, schedule, config = load_run(args.run, ema=args.ema, device=device)
        cond = _labels(args, n, info["data"]["num_classes"])
        if args.guidance != 1.0:
            denoiser = cfg_denoiser(denoiser, args.guidance)
        options = dict(n=n, sampler=args.sampler, steps=args.steps, spacing=args.spacing, seed=args.seed,
                       batch_size=args.batch_size, cond=cond, device=device)
        if args.spacing == "tuned":
            options.update(spacing="default", sigmas=load_grid(args.run, args.sampler, args.steps),
                           **tuned_options(args.run, args.sampler, args.steps))
        shape = info["data"]["shape"]
        written = (sample_points if kind == "points" else sample_images)(denoiser, schedule, shape, config, out,
                                                                         args.trajectory, options)
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
    x = distributed.generate(denoiser, schedule, shape, callback=recorder, **options).cpu()
    if not distributed.current().is_main:
        return []  # under torchrun rank 0 writes the files
    _save_array(out, samples=x.numpy().astype(np.float32))
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
    x = distributed.generate(denoiser, schedule, shape, **options).cpu().clamp(-1, 1)
    if not distributed.current().is_main:
        return []  # under torchrun rank 0 writes the files
    cond = options["cond"]
    grid = viz.image_grid_png(out, x, labels=cond)
    arrays = {"samples": x.numpy()} if cond is None else {"samples": x.numpy(), "labels": cond.numpy()}
    _save_array(out.with_suffix(".npz"), **arrays)
    written = [grid, out.with_suffix(".npz")]
    if trajectory is not None:
        k = min(8, options["n"])
        recorder = Recorder()
        small = {**options, "n": k, "cond": None if cond is None else cond[:k]}
        final = sampling.generate(denoiser, schedule, shape, callback=recorder, **small).cpu()
        frames = recorder.frames() + [(0.0, final, final)]
        written.append(viz.trajectory_gif(trajectory, frames))
    return written


# -------------------------------------------------------------------------------------------- demo


DEMOS = ("digits", "moons")  # presets that `rediffuse demo --data NAME` trains, samples and pictures


def cmd_demo(args: argparse.Namespace) -> int:
    recipe = preset(args.data)
    steps = args.steps if args.steps is not None else recipe["steps"]
    config = TrainConfig.from_dict({**recipe, "steps": steps, "out": str(args.out), "device": args.device})
    print(f"training {config.net} on {config.data} for {config.steps} steps in {args.out} ...")
    started = time.perf_counter()
    result = train(config, resume=True)
    if result.stopped == "interrupted":
        _report_training(result, config)
        return INTERRUPTED
    denoiser, schedule, _ = load_run(args.out, device=resolve_device(args.device))
    info = run_info(args.out)
    if info["data"]["kind"] == "points":
        options = dict(n=4000, batch_size=4000, cond=None, device=args.device, **SAMPLING[args.data])
        written = sample_points(denoiser, schedule, [2], config, args.out / "samples.npy", None, options)
    else:
        classes = info["data"]["num_classes"]
        cond = torch.arange(10 * classes) // 10  # one row of ten per class
        options = dict(n=len(cond), batch_size=len(cond), cond=cond, device=args.device, **SAMPLING[args.data])
        written = sample_images(denoiser, schedule, info["data"]["shape"], config, args.out / "samples.png",
                                args.out / "trajectory.gif", options)
    print(f"done in {time.perf_counter() - started:.0f} s; wrote:")
    for path in [*written, *[p for p in [args.out / "loss.png"] if p.exists()]]:
        print(f"  {path}")
    return 0


# -------------------------------------------------------------------------------------------- main


def _one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `rediffuse` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except (UsageError, ConfigError) as err:
        if debug:
            raise
        verb = next((a for a in argv if a in VERBS), None)
        hint = f" (see '{PROG}{' ' + verb if verb else ''} --help')" if isinstance(err, ParseError) else ""
        print(f"{PROG}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, RuntimeError) as err:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        print(f"{PROG}: error: unexpected {type(err).__name__}: {_one_line(err)} (rerun with --debug for the "
              "traceback and please report it)", file=sys.stderr)
        return 1
