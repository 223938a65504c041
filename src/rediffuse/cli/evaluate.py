"""The `rediffuse eval` verb: sample metrics and bits/dim of a trained image run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rediffuse import distributed, samplers
from rediffuse.evaluation.evaluate import METRICS, evaluate
from rediffuse.errors import UsageError


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `eval` on the `rediffuse` sub-command parser."""
    p = verbs.add_parser("eval", parents=[common], help="measure a trained image run (FD, PR, accuracy, NLL)",
                         description="Frechet distance and precision/recall on the project's classifier "
                                     "features, class accuracy, and bits/dim; also for held-out real data "
                                     "(the floor). Writes RUN/eval/eval.json and eval.md.")
    p.add_argument("run", type=Path, metavar="RUN", help="run folder")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma list from {','.join(METRICS)}")
    p.add_argument("-n", type=int, default=10_000, help="samples (default: 10000)")
    p.add_argument("--sampler", default="heun", choices=sorted(samplers.SAMPLERS), help="sampler (default: heun)")
    p.add_argument("--steps", type=int, default=18, help="sampler steps (default: 18)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per batch (default: 500)")
    p.add_argument("--nll-n", type=int, default=64, help="held-out images for bits/dim (default: 64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    if not args.run.is_dir():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise UsageError(f"--metrics takes a comma list from {','.join(METRICS)}, got {args.metrics!r}")
    if min(args.n, args.steps, args.batch_size, args.nll_n) < 1:
        raise UsageError("-n, --steps, --batch-size and --nll-n must be >= 1")
    with distributed.session(args.device) as world:  # under torchrun the ranks split the sample batches
        evaluate(args.run, metrics=metrics, n=args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                 guidance=args.guidance, batch_size=args.batch_size, nll_n=args.nll_n,
                 device=str(world.device(args.device)))
        if distributed.is_main_process():
            print((args.run / "eval" / "eval.md").read_text(), end="")
            print(args.run / "eval" / "eval.json")
    return 0
