"""The `rediffuse eval` verb: sample metrics and bits/dim of a trained image run; held-out NELBO of a text run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rediffuse import distributed, modalities, runs, samplers
from rediffuse.cli.common import PROG, finite_float, device_name
from rediffuse.evaluation.evaluate import METRICS, evaluate
from rediffuse.evaluation.tables.report import evaluate_table
from rediffuse.evaluation.text import evaluate_text
from rediffuse.errors import UsageError
from rediffuse.recommended import choose
from rediffuse.distributed import DEVICE_HELP


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `eval` on the `rediffuse` sub-command parser."""
    p = verbs.add_parser("eval", parents=[common],
                         help="measure a trained run (images, audio: FD, PR, accuracy, IS; text: held-out NELBO)",
                         description="Images and spoken digits: Frechet distance and precision/recall on the "
                                     "project's classifier features, class accuracy, IS and modified IS, and "
                                     "(images) bits/dim; also for held-out real data (the floor). Text: the "
                                     "held-out NELBO in bits/char with its standard error. Writes "
                                     "RUN/eval/eval.json and eval.md.")
    p.add_argument("run", type=Path, metavar="RUN", help="run folder")
    p.add_argument("--metrics", default=None,
                   help=f"comma list from {','.join(METRICS)} (images; default all; audio without nll) or nelbo (text; "
                        "an autoregressive run reports its exact nll)")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="text and table runs: the held-out data (default: the @heldout part of the run's @train "
                        "data)")
    p.add_argument("--draws", type=int, default=4, help="text runs: NELBO draws per window (default: 4)")
    p.add_argument("-n", type=int, default=None, help="samples (default: 10000 images, 1000 audio clips)")
    p.add_argument("--sampler", default=None, choices=sorted(samplers.SAMPLERS),
                   help="sampler (default: the run's recommended sampling, else heun; consistency for a `distill` "
                        "run)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: the run's recommended, else 18; a `distill` run: 2)")
    p.add_argument("--guidance", type=finite_float, default=None,
                   help="classifier-free guidance scale (default: the run's recommended, else 1)")
    p.add_argument("--eta", type=finite_float, default=None,
                   help="the fresh noise of ddim, euler-ancestral and dpmpp-2m-sde, 0 (none: the ODE) to 1 (the "
                        "full posterior's) (default: the run's recommended, else the sampler's own)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per batch (default: 500; text runs: windows per batch, default 64)")
    p.add_argument("--nll-n", type=int, default=64, help="held-out images for bits/dim (default: 64)")
    p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    p.add_argument("--features", default="auto", metavar="auto|classifier|inception:PATH",
                   help="image features: auto (the built-in digits, MNIST and FSDD classifiers), classifier (also one "
                        "trained on the run's own labelled images, cached by data hash) or inception:PATH (FID's "
                        "Inception-v3 weights file you supply; FD and precision/recall)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    if not args.run.is_dir():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    opened = runs.open(args.run)
    info = opened.spec
    modality = modalities.of(info)
    text = not modality.gaussian  # a token run: its held-out NELBO or NLL
    allowed = modality.eval_metrics
    if not allowed:
        raise UsageError(f"rediffuse eval measures image, audio and text runs, not {modality.a_run}; use "
                         "bench-samplers or rediffuse.evaluation.metrics")
    if info.consistency:
        allowed = tuple(m for m in allowed if m != "nll")  # a consistency function has no ODE to integrate
    if text:  # a token run reports what it has: an autoregressive run its NLL, a diffusion run its bound
        allowed = ("nll",) if info.bos_id is not None else ("nelbo",)
    given = args.metrics if args.metrics is not None else ",".join(allowed)
    metrics = [m.strip() for m in given.split(",") if m.strip()]
    bad = [m for m in metrics if m not in allowed]
    if text and bad == ["nll"]:
        raise UsageError("--metrics nll needs an autoregressive run; a diffusion run reports its bound: --metrics "
                         "nelbo")
    if bad or not metrics:
        kind = modality.a_run + (" (a `distill` run has no bits/dim: evaluate its teacher)"
                                 if info.consistency else "")
        raise UsageError(f"--metrics for {kind} takes a comma list from {','.join(allowed)}, got {given!r}")
    if modality.eval_report == "table":  # every metric, on as many rows as the training part unless -n
        if (args.n is not None and args.n < 1) or (args.steps is not None and args.steps < 1):
            raise UsageError("-n and --steps must be >= 1")
        evaluate_table(args.run, data=args.data, n=args.n, steps=args.steps,
                       guidance=1.0 if args.guidance is None else args.guidance,
                       seed=args.seed, device=args.device)
        print((args.run / "eval" / "eval.md").read_text(), end="")
        print(args.run / "eval" / "eval.json")
        return 0
    chosen = choose(info, opened.config.sampling, args.sampler, args.steps, "default", args.guidance, 18, args.eta)
    args.sampler, args.steps, args.guidance, args.eta = chosen.sampler, chosen.steps, chosen.guidance, chosen.eta
    if chosen.recommended and not text:
        print(f"{PROG}: sampling with {chosen.describe()}", file=sys.stderr)
    if args.n is None:
        args.n = modality.eval_n
    if args.batch_size is None:
        args.batch_size = 64 if text else 500
    if min(args.n, args.steps, args.batch_size, args.nll_n, args.draws) < 1:
        raise UsageError("-n, --steps, --batch-size, --nll-n and --draws must be >= 1")
    if text:
        evaluate_text(args.run, data=args.data, draws=args.draws, seed=args.seed, batch_size=args.batch_size,
                      device=args.device)
        print((args.run / "eval" / "eval.md").read_text(), end="")
        print(args.run / "eval" / "eval.json")
        return 0
    with distributed.session(args.device) as world:  # under torchrun the ranks split the sample batches
        evaluate(args.run, metrics=metrics, n=args.n, sampler=args.sampler, steps=args.steps, seed=args.seed,
                 guidance=args.guidance, batch_size=args.batch_size, nll_n=args.nll_n,
                 device=str(world.device(args.device)), features=args.features, eta=args.eta)
        if distributed.is_main_process():
            print((args.run / "eval" / "eval.md").read_text(), end="")
            print(args.run / "eval" / "eval.json")
    return 0
