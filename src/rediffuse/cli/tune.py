"""The sampler verbs of the command line: `bench-samplers` (which sampler to use) and `tune-grid`."""

from __future__ import annotations

import argparse
import sys
import dataclasses
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rediffuse.cli.common import device_name
from rediffuse import runs, samplers
from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.core.denoisers import Denoiser
from rediffuse.errors import CheckpointError, UsageError
from rediffuse.tuning import bench as sb
from rediffuse.tuning import grids as tg
from rediffuse.config import resolve_device
from rediffuse.data.dataset import build_data
from rediffuse.runs import saved_config
from rediffuse.tuning.pipeline import tune
from rediffuse.tuning.teleport import GaussianFlow
from rediffuse.distributed import DEVICE_HELP


def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register bench-samplers and tune-grid on the `rediffuse` sub-command parser."""
    bench = verbs.add_parser("bench-samplers", parents=[common],
                             help="compare every sampler x grid x NFE (points, images or audio runs)",
                             description="Every sampler at NFE 5/10/20/50 against a high-accuracy reference "
                                         "from the same noise; writes bench.md, bench.json and bench.png.")
    bench.add_argument("run", type=Path, nargs="?", metavar="RUN", help="run folder (or use --analytic)")
    bench.add_argument("--analytic", metavar="NAME", choices=sorted(analytic.PRESETS),
                       help=f"benchmark the exact denoiser of a built-in mixture ({', '.join(analytic.PRESETS)})")
    bench.add_argument("--schedule", default="edm", help="schedule for --analytic (default: edm)")
    bench.add_argument("-n", type=int, default=256, help="samples (default: 256)")
    bench.add_argument("--nfe", type=int, nargs="+", default=list(sb.NFES), help="NFE budgets (default: 5 10 20 50)")
    bench.add_argument("--samplers", nargs="+", default=None, choices=sorted(samplers.SAMPLERS), metavar="NAME",
                       help="samplers to include (default: all)")
    bench.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/bench or bench-NAME)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    bench.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    bench.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar (on a terminal) or per-sampler lines (otherwise)")
    bench.set_defaults(func=cmd_bench)

    tune = verbs.add_parser("tune-grid", parents=[common],
                            help="tune a step grid to a trained run (points, images or audio)",
                            description="Minimise a sampler's error against a high-accuracy solution over the "
                                        "grid's noise levels; saves RUN/grids.json for `sample --spacing tuned`.")
    tune.add_argument("run", type=Path, metavar="RUN", help="run folder")
    tune.add_argument("--sampler", default="dpmpp-2m", choices=sorted(samplers.SAMPLERS), help="sampler")
    tune.add_argument("--steps", type=int, default=10, help="grid steps (default: 10)")
    tune.add_argument("-n", type=int, default=64, help="tuning batch (default: 64)")
    tune.add_argument("--pool", type=int, default=None,
                      help="draws solved by the reference solver; the batch is the -n of them the starting grids "
                           "get most wrong, half, plus a weighted random half of the rest (default: 4 x n)")
    tune.add_argument("--evals", type=int, default=200, help="objective evaluations (default: 200)")
    tune.add_argument("--seed", type=int, default=1, help="seed of the tuning noise (default: 1)")
    tune.add_argument("--starts", nargs="+", default=list(tg.START_SPACINGS), choices=list(tg.START_SPACINGS),
                      metavar="SPACING", help="grids to start the search from (bump: the two best of a coarse search "
                                              "over log-SNR grids with extra steps around one level); the best result "
                                              "wins "
                                              f"(default: {' '.join(tg.START_SPACINGS)})")
    tune.add_argument("--teleport", action="store_true",
                      help="take the first step in closed form under a Gaussian fitted to the training data "
                           "and tune where it lands (unconditional runs)")
    tune.add_argument("--warm-start", action="store_true",
                      help="with --teleport: multistep samplers start with the Gaussian's history above the landing "
                           "instead of lower-order steps (often better at 5-10 steps; tune both and compare)")
    tune.add_argument("--fit-jump", action="store_true",
                      help="with --teleport: then correct the Gaussian's jump to the landing by an affine map fitted "
                           "to the model's own flow on three quarters of the pool (kept only if better on the rest)")
    tune.add_argument("--learn-coefficients", type=int, default=0, metavar="ITERS",
                      help="with --sampler ipndm: then fit its per-step coefficients to the pool by ITERS Adam steps "
                           "on batches of -n (a quarter of the pool held out; kept only if better there)")
    tune.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    tune.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar over the grid searches (it shows only on a terminal anyway)")
    tune.set_defaults(func=cmd_tune)


def _problem(args: argparse.Namespace) -> tuple[Any, schedules.Schedule, list[int], Path | None, Path]:
    """(denoiser, schedule, per-sample shape, run folder or None, output folder) for a bench or tune call."""
    if getattr(args, "analytic", None):
        if args.run is not None:
            raise UsageError("give either RUN or --analytic NAME, not both")
        mixture = analytic.preset(args.analytic)
        return (mixture.denoiser(), schedules.get(args.schedule), [mixture.dim], None,
                args.out or Path(f"bench-{args.analytic}"))
    if args.run is None:
        raise UsageError("give a run folder, or --analytic NAME for a built-in mixture")
    if not args.run.is_dir():
        raise UsageError(f"run folder {str(args.run)!r} does not exist; give the --out folder of a training run")
    opened = runs.open(args.run)
    denoiser = opened.model(resolve_device(args.device))
    if not isinstance(denoiser, Denoiser):
        raise CheckpointError(f"run {str(args.run)!r} trained objective {opened.config.objective!r}, not a "
                              "Gaussian denoiser; bench-samplers and tune-grid take points, image and audio runs")
    shape = list(opened.spec.data.shape)
    return denoiser, denoiser.schedule, shape, args.run, getattr(args, "out", None) or args.run / "bench"


def _labels(run: Path | None, n: int) -> torch.Tensor | None:
    """Every class in turn for class-conditional runs."""
    classes = None if run is None else runs.open(run).spec.data.num_classes
    return None if not classes else torch.arange(n) % classes


def cmd_bench(args: argparse.Namespace) -> int:
    if args.n < 2 or min(args.nfe) < 1:
        raise UsageError("-n must be >= 2 and every --nfe >= 1")
    denoiser, schedule, shape, run, out = _problem(args)
    title = f"samplers on {args.analytic or run}"
    bar = tqdm(total=len(args.samplers or samplers.SAMPLERS), desc="samplers", unit="sampler", file=sys.stderr,
               disable=None if args.progress else True)

    def measured(name: str) -> None:
        bar.update(1)
        bar.set_postfix_str(name)
        if args.progress and bar.disable:  # not a terminal: a line per sampler instead of a bar
            print(f"  measured {name}", flush=True)

    with bar:
        entries = sb.bench(denoiser, schedule, shape, n=args.n, nfes=args.nfe, names=args.samplers, seed=args.seed,
                           run_dir=run, device=args.device, cond=_labels(run, args.n), progress=measured)
    for path in sb.write_report(entries, out, title):
        print(path)
    for k, e in sorted(sb.recommend(entries).items()):
        print(f"NFE {k}: {e.sampler} on the {e.spacing} grid (rms error {e.error:.3e})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.n < 1 or args.evals < 1 or args.learn_coefficients < 0:
        raise UsageError("--steps, -n and --evals must be >= 1, --learn-coefficients >= 0")
    if args.learn_coefficients and args.sampler != "ipndm":
        raise UsageError(f"--learn-coefficients fits iPNDM's coefficients; use --sampler ipndm, not {args.sampler}")
    pool = 4 * args.n if args.pool is None else args.pool
    if pool < args.n:
        raise UsageError(f"--pool {pool} is smaller than the tuning batch -n {args.n}; give --pool >= -n")
    if args.fit_jump and not args.teleport:
        raise UsageError("--fit-jump corrects the teleport's jump; add --teleport")
    if args.warm_start and (not args.teleport or args.sampler not in samplers.WARM_STARTED):
        raise UsageError(f"--warm-start needs --teleport and a multistep sampler "
                         f"({', '.join(sorted(samplers.WARM_STARTED))})")
    denoiser, schedule, shape, run, _ = _problem(args)
    x = tg.tuning_noise(args.seed, pool, shape, args.device) * schedule.prior_std(schedule.sigma_max)
    cond = _labels(run, pool)
    cond = None if cond is None else cond.to(args.device)
    teleport = None
    if args.teleport:
        if cond is not None:
            raise UsageError("--teleport needs an unconditional run: its Gaussian fit ignores the class labels")
        teleport = GaussianFlow.fit(_training_data(run))
    bar = tqdm(desc="grid searches", unit="search", file=sys.stderr, disable=None if args.progress else True)

    def searched(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with bar:
        plan = tune(denoiser, schedule, args.sampler, args.steps, x, cond=cond, batch=args.n, max_evals=args.evals,
                    starts=args.starts, teleport=teleport, warm_start=args.warm_start, jump=args.fit_jump,
                    learn_iters=args.learn_coefficients, learn_batch=args.n, log=bar.write, progress=searched)
    print(tg.save_plan(run, plan))
    return 0


def _training_data(run: Path, limit: int = 10_000, max_values: int = 200_000_000) -> torch.Tensor:
    """Up to `limit` training examples of a run (fewer for large examples), for the Gaussian fit of --teleport."""
    config = saved_config(run)
    assert config is not None, "the run's checkpoint was loaded already"
    try:
        x = build_data(dataclasses.replace(config, num_points=limit)).x
    except (ValueError, OSError) as err:
        raise UsageError(f"--teleport fits the training data, which cannot be loaded now ({err})") from err
    return x[:min(limit, max(64, max_values // x[0].numel()))]  # the fit holds n x d float64 values
