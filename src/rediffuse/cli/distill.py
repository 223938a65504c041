"""The `distill` verb: consistency tuning (ECT, or distillation: cd) of a trained Gaussian run into a 1-2 step
student run.

The student's config is the teacher's (data, network, schedule, seed, batch size, label dropout) with the
objective `consistency`, the teacher's checkpoint, and tuning defaults (below); flags override any key, and
`--resume` continues a student run like `train --resume`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from rediffuse import checkpoint, distributed
from rediffuse.cli.common import INTERRUPTED, PROG
from rediffuse.cli.train import add_config_flags, report_training
from rediffuse.config import TrainConfig
from rediffuse.errors import CheckpointError, UsageError
from rediffuse.objectives.consistency import METHODS, teacher_checkpoint, teacher_spec
from rediffuse.runs import config_of, find_checkpoint, saved_config
from rediffuse.train import train

# What a student changes from its teacher's config unless flags say otherwise: no warmup (the weights are
# trained), lr 2e-4 with a cosine decay (best of 1e-4, 2e-4 and 1e-3 in docs/results.md), and a 10-minute budget
# when neither --steps nor --minutes is given.
TUNING = dict(objective="consistency", lr=2e-4, lr_schedule="cosine", warmup_steps=0, sample_every=0)


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `distill` on the `rediffuse` sub-command parser."""
    p = verbs.add_parser("distill", parents=[common],
                         help="tune a trained Gaussian run (points, images or audio) for 1-2 step sampling",
                         description="Consistency tuning (ECT, Geng et al. 2024) of a trained Gaussian run, "
                                     "started from its EMA weights; sample the result with --steps 1 or 2.")
    p.add_argument("run", type=Path, metavar="RUN", help="the teacher: a trained Gaussian run (or ckpt-<step>)")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="the tuning method: ect (default), or cd (pairs from the teacher's ODE; with "
                        "--teacher-guidance W the guided teacher's, guidance baked in)")
    p.add_argument("--resume", action="store_true", help="continue the student run in --out")
    add_config_flags(p)
    p.set_defaults(func=cmd_distill)


def student_config(args: argparse.Namespace) -> TrainConfig:
    """The teacher's config, the tuning defaults, then the flags (with --resume: the student's saved config)."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if args.method is not None:
        flags["ct_method"] = args.method
    if "out" not in flags:
        raise UsageError("--out is required: the folder of the student run")
    saved = saved_config(flags["out"]) if args.resume else None
    if saved is not None:
        return TrainConfig.from_dict({**saved.to_dict(), **flags})
    try:
        teacher = find_checkpoint(args.run)
    except CheckpointError as err:
        raise UsageError(f"distill needs a trained run: {err}") from None
    teacher = teacher_checkpoint(teacher)
    teacher_spec(teacher)  # a Gaussian run, or a one-line error
    values = {**config_of(teacher, checkpoint.read_manifest(teacher)["meta"]).to_dict(), **TUNING,
              "teacher": str(teacher)}
    if "steps" not in flags and "minutes" not in flags:
        flags["minutes"] = 10.0
    if "minutes" in flags and "steps" not in flags:
        values.update(steps=1_000_000_000, checkpoint_every=1_000_000_000, checkpoint_minutes=2.0)
    elif "steps" in flags:
        values.update(minutes=None, checkpoint_minutes=None, checkpoint_every=max(1, flags["steps"] // 4))
    return TrainConfig.from_dict({**values, **flags})


def cmd_distill(args: argparse.Namespace) -> int:
    config = student_config(args)
    main_rank = distributed.is_main_process()
    if main_rank and args.resume and not checkpoint.written(config.out):
        print(f"{PROG}: no checkpoint in {config.out}; starting a new student run", file=sys.stderr)
    result = train(config, resume=args.resume)
    if main_rank:
        report_training(result, config)
        print(f"sample it with: {PROG} sample {config.out} --steps 2")
    return INTERRUPTED if result.stopped == "interrupted" else 0
