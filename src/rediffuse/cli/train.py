"""The `train` and `demo` verbs: a TrainConfig from defaults, a preset, a TOML file and flags; then training."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import torch

from rediffuse import checkpoint, distributed, runs
from rediffuse.cli.common import INTERRUPTED, PROG, finite_float, device_name
from rediffuse.cli.sample import draw_and_write
from rediffuse.errors import ConfigError, UsageError
from rediffuse.presets import PRESETS, SAMPLING, preset
from rediffuse.config import TrainConfig, key_groups, resolve_device
from rediffuse.data.dataset import data_kind
from rediffuse.runs import saved_config
from rediffuse.sampling.run import Run
from rediffuse.train import TrainResult, train
from rediffuse.distributed import DEVICE_HELP

ALIASES = {"parameterization": ["--param"]}

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
        return finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a finite number, got {text!r}") from None


FLAG_TYPES: dict[str, Callable[[str], Any]] = {"str": str, "str | None": str, "int": int, "int | None": int,
                                               "float": finite_float, "float | None": finite_float, "dict": _json_table,
                                               "float | str": _float_or_auto}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size, ...), absent unless given, listed in the
    groups of their owners (the run, each objective, each kind of data)."""
    defaults = TrainConfig().to_dict()
    for title, fields in key_groups():
        group = parser.add_argument_group(title.lower().removeprefix("the ").replace("keys", "flags", 1))
        for f in fields:
            names = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
            help_text = f"{f.metadata.get('help', '')} (default: {defaults[f.name]!r})"
            if f.type == "bool":
                group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                metavar = f.name.upper() if f.type != "dict" else "JSON"
                group.add_argument(*names, dest=f.name, type=FLAG_TYPES[str(f.type)], default=argparse.SUPPRESS,
                                   metavar=metavar, help=help_text)



def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `train` and `demo` on the `rediffuse` sub-command parser."""
    train_p = verbs.add_parser("train", parents=[common], help="train a model (points, images, audio or text)",
                               description="Train a diffusion model; flags override the --config TOML file.")
    train_p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                         help="start from a named recipe (the --config file and flags override it)")
    train_p.add_argument("--config", type=Path, metavar="TOML", help="TOML file of config keys (flags override)")
    train_p.add_argument("--resume", action="store_true",
                         help="continue the run in --out from its newest checkpoint")
    add_config_flags(train_p)
    train_p.set_defaults(func=cmd_train)

    demo_p = verbs.add_parser("demo", parents=[common], help="train and sample the demo model (digits, ~3.5 min)",
                              description="Train the demo model on built-in data, sample it and write pictures.")
    demo_p.add_argument("--data", default="digits", choices=sorted(DEMOS),
                        help="digits: class-conditional UNet on 8x8 digits; moons: 2-D MLP (default: digits)")
    demo_p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default: runs/demo)")
    demo_p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    demo_p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    demo_p.set_defaults(func=cmd_demo)


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
    if main_rank and args.resume and not checkpoint.written(config.out):
        print(f"{PROG}: no checkpoint in {config.out}; starting a new run", file=sys.stderr)
    result = train(config, resume=args.resume)
    if main_rank:
        report_training(result, config)
    return INTERRUPTED if result.stopped == "interrupted" else 0


def report_training(result: TrainResult, config: TrainConfig) -> None:
    why = {"done": "finished", "time": "stopped at the time budget", "interrupted": "interrupted"}[result.stopped]
    unit = {"text": "windows", "table": "rows"}.get(data_kind(config.data), data_kind(config.data))
    print(f"{why} at step {result.step}; checkpoint {result.checkpoint} ({result.samples_per_s:.0f} {unit}/s)")
    if result.stopped != "done":
        print(f"continue with: {PROG} train --out {config.out} --resume")


DEMOS = ("digits", "moons")  # presets that `rediffuse demo --data NAME` trains, samples and pictures


def cmd_demo(args: argparse.Namespace) -> int:
    recipe = preset(args.data)
    steps = args.steps if args.steps is not None else recipe["steps"]
    config = TrainConfig.from_dict({**recipe, "steps": steps, "out": str(args.out), "device": args.device})
    print(f"training {config.net} on {config.data} for {config.steps} steps in {args.out} ...")
    started = time.perf_counter()
    result = train(config, resume=True)
    if result.stopped == "interrupted":
        report_training(result, config)
        return INTERRUPTED
    run = Run(runs.open(args.out), resolve_device(args.device))
    settings = {k: v for k, v in SAMPLING[args.data].items() if k in ("sampler", "steps", "spacing", "seed")}
    if run.num_classes is None:
        request = run.request(4000, batch_size=4000, **settings)
        written = draw_and_write(run, request, args.out / "samples.npy")
    else:
        cond = torch.arange(10 * run.num_classes) // 10  # one row of ten per class
        request = run.request(len(cond), cond, batch_size=len(cond), **settings)
        written = draw_and_write(run, request, args.out / "samples.png", args.out / "trajectory.gif")
    print(f"done in {time.perf_counter() - started:.0f} s; wrote:")
    for path in [*written, *[p for p in [args.out / "loss.png"] if p.exists()]]:
        print(f"  {path}")
    return 0

