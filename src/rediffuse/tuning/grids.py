"""Step grids tuned to the model at hand: minimise a sampler's error against a high-accuracy solution.

The free parameters are the log-sigma increments of the grid (a softmax, so the grid stays descending and
inside [sigma_min, sigma_max]); the first level is sigma_max and the grid ends in 0. The objective is the
RMS distance between the sampler's output and a reference ODE solution from the same starting noise, on a
few tuning batches; scipy's derivative-free Powell search minimises it. Grids are saved in the run folder
(`grids.json`, one `SamplingPlan` entry per sampler and step count) and reused by `rediffuse sample --spacing
tuned`. With a `GaussianFlow` the grid's first step is an analytical jump (`rediffuse.tuning.teleport`) whose
landing level is tuned with the rest.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from rediffuse.io import atomic_write_json
from rediffuse.samplers import TWO_EVAL_SAMPLERS
from rediffuse.core.schedules import Schedule, append_zero, karras_sigmas
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.reference import reference_solution
from rediffuse.tuning.teleport import GaussianFlow

GRIDS_FILE = "grids.json"
HELD_OUT = 4  # every fit on a tuning pool (jump, coefficients) holds out the pool's last 1 / HELD_OUT


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Grid steps that spend at most `nfe` network evaluations with this sampler."""
    return max(1, (nfe + 1) // 2) if sampler in TWO_EVAL_SAMPLERS else nfe


# Evaluation noise (`sampling.sample_generators`: `sample`, `bench-samplers`) comes from one generator per sample,
# seeded seed * 1_000_003 + i; torch's CPU generator keeps only the low 32 bits of a seed. Tuning noise is one
# stream from a generator seeded at the top of that range, TUNING_SEED - seed, which no evaluation generator of
# a practical seed and sample count starts from, so a grid is never scored on the noise it was tuned on.
TUNING_SEED = 2**32 - 1


def tuning_noise(seed: int, n: int, shape: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """n standard-normal starting points for grid tuning, disjoint from the evaluation noise."""
    generator = torch.Generator().manual_seed(TUNING_SEED - seed)
    return torch.randn((n, *shape), generator=generator).to(device)


def held_out_split(n: int) -> int:
    """Where the held-out part of a pool of n draws starts: fits use the draws before it, checks those after."""
    return n - n // HELD_OUT


def grid_from_params(theta: np.ndarray, sigma_min: float, sigma_max: float) -> Tensor:
    """A descending grid from sigma_max (inclusive) toward sigma_min (exclusive), then 0."""
    weights = np.exp(theta - theta.max())
    frac = np.cumsum(weights / weights.sum())[:-1]
    log_hi, log_lo = math.log(sigma_max), math.log(sigma_min)
    levels = np.concatenate([[sigma_max], np.exp(log_hi + frac * (log_lo - log_hi))])
    levels = np.minimum.accumulate(np.minimum(levels, sigma_max))  # exp(log(s)) can round above s
    return append_zero(torch.tensor(levels, dtype=torch.float64))


def params_from_grid(sigmas: Tensor, sigma_min: float) -> np.ndarray:
    """The softmax parameters that reproduce a grid (its log-sigma gaps, the last gap down to sigma_min)."""
    levels = sigmas[sigmas > 0].log().tolist() + [math.log(sigma_min)]
    gaps = np.maximum(-np.diff(levels), 1e-6)
    return np.log(gaps)


@torch.no_grad()
def plan_errors(plan: SamplingPlan, denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor,
                cond: Tensor | None = None) -> Tensor:
    """Each sample's mean squared distance between the plan's output from x and the reference."""
    out = plan.run(denoiser, x, cond=cond)
    return (out - ref).double().pow(2).reshape(len(out), -1).mean(1).cpu()


def plan_rms(plan: SamplingPlan, denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor,
             cond: Tensor | None = None, weights: Tensor | None = None) -> float:
    """RMS distance between the plan's output from x and the reference; weighted, with per-sample `weights`.

    The weighted RMS is the estimate a `stratified_batch` calls for.
    """
    per_sample = plan_errors(plan, denoiser, x, ref, cond)
    if weights is None:
        return float(per_sample.mean().sqrt())
    return float(((weights * per_sample).sum() / weights.sum()).sqrt())


def per_sample_error(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, sigmas: Tensor, sampler: str,
                     cond: Tensor | None = None, teleport: GaussianFlow | None = None,
                     warm_start: bool = False, **options) -> Tensor:
    """`plan_errors` of the plan these options make (`options`: iPNDM's learned `coefficients`)."""
    return plan_errors(SamplingPlan(sampler, sigmas, teleport, warm_start, **options), denoiser, x, ref, cond)


def rms_error(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, sigmas: Tensor, sampler: str,
              cond: Tensor | None = None, teleport: GaussianFlow | None = None,
              weights: Tensor | None = None, warm_start: bool = False, **options) -> float:
    """`plan_rms` of the plan these options make (first step teleported, if given; `options` as `per_sample_error`)."""
    return plan_rms(SamplingPlan(sampler, sigmas, teleport, warm_start, **options), denoiser, x, ref, cond, weights)


def default_landing(teleport: GaussianFlow, sigma_max: float) -> float:
    """Where a teleported grid starts its search: 3 standard deviations of the fit's widest direction."""
    widest = max([*teleport.evals.tolist(), teleport.rest, 1e-12])
    return min(sigma_max, 3.0 * widest**0.5)


def optimize_grid(denoiser: Callable[..., Tensor], x: Tensor, sampler: str, steps: int, sigma_min: float,
                  sigma_max: float, ref: Tensor | None = None, cond: Tensor | None = None,
                  max_evals: int = 300, init: Tensor | None = None, teleport: GaussianFlow | None = None,
                  landing: float | None = None, weights: Tensor | None = None,
                  warm_start: bool = False) -> tuple[Tensor, float, float]:
    """Tune a `steps`-step grid for `sampler` on starting noise x; returns (grid, initial error, tuned error).

    The search starts from `init` (default: the Karras rho=7 grid), its levels squeezed below `landing` when
    `teleport` is given: then the grid is [sigma_max, landing, ...] with the first step taken by the Gaussian
    flow (no network call), and the landing level is tuned too; `warm_start` as in `SamplingPlan`.
    """
    if ref is None:
        ref = reference_solution(denoiser, x, sigma_max, sigma_min, cond=cond)
    if init is None:
        init = append_zero(karras_sigmas(steps, sigma_min, sigma_max))
    if len(init) != steps + 1:
        raise ValueError(f"initial grid has {len(init) - 1} steps, expected {steps}")
    theta0 = params_from_grid(init, sigma_min)
    if teleport is not None:
        land = default_landing(teleport, sigma_max) if landing is None else landing
        theta0 = np.concatenate([[math.log(min(land, sigma_max))], theta0])

    def to_grid(theta: np.ndarray) -> Tensor:
        if teleport is None:
            return grid_from_params(theta, sigma_min, sigma_max)
        land = max(math.exp(min(float(theta[0]), math.log(sigma_max))), sigma_min)  # no overflow
        return torch.cat([torch.tensor([sigma_max], dtype=torch.float64), grid_from_params(theta[1:], sigma_min, land)])

    def objective(theta: np.ndarray) -> float:
        err = rms_error(denoiser, x, ref, to_grid(theta), sampler, cond, teleport, weights, warm_start)
        return math.log(err) if math.isfinite(err) and err > 0 else 1e3

    start = objective(theta0)
    best, best_f, used = theta0, start, 1  # (bounding the landing level made Powell's line searches worse)
    while used < max_evals:  # Powell again from where it stopped, with fresh directions, while it improves
        result = minimize(objective, best, method="Powell", options={"maxfev": max_evals - used, "xtol": 1e-3,
                                                                     "ftol": 1e-4})
        used += result.nfev
        if not result.fun < best_f - 1e-4:
            break
        best, best_f = result.x, result.fun
    return to_grid(best), math.exp(start), math.exp(best_f)


BUMP = "bump"  # a start found by `family_search` rather than a standard spacing
START_SPACINGS = ("default", "karras", "logsnr", "uniform", BUMP)


def bump_grid(steps: int, top: float, lowest: float, centre: float, extra: float, width: float) -> Tensor:
    """`steps` levels from top down to lowest, then 0, at equal quantiles of a step density in log sigma.

    The density is 1 + extra * exp(-(log sigma - log centre)^2 / (2 width^2)): log-SNR spacing (extra = 0) with
    more steps around one level, where on multimodal data the samples choose their mode.
    """
    if not top > lowest > 0:
        raise ValueError(f"a bump grid runs from a top level down to a lower positive one; got {top} -> {lowest}")
    if steps == 1:
        return torch.tensor([top, 0.0], dtype=torch.float64)
    u = np.linspace(math.log(top), math.log(lowest), 4001)
    density = 1 + extra * np.exp(-((u - math.log(centre)) ** 2) / (2 * width**2))
    mass = np.concatenate([[0.0], np.cumsum(density[1:] + density[:-1])])
    levels = np.exp(np.interp(np.linspace(0, 1, steps), mass / mass[-1], u))
    levels[0], levels[-1] = top, lowest
    return append_zero(torch.tensor(levels, dtype=torch.float64))


def bump_candidates(steps: int, tops: Sequence[float], sigma_min: float) -> list[Tensor]:
    """The coarse family `family_search` scores: each top, lowest level 3, 10 or 30 sigma_min, and no bump or one
    of two heights and two widths at five levels spread evenly in log sigma between lowest and top."""
    grids = []
    for top in tops:
        for lowest in (3 * sigma_min, 10 * sigma_min, 30 * sigma_min):
            if not top > lowest:
                continue
            grids.append(bump_grid(steps, top, lowest, top, 0.0, 1.0))
            for centre in np.geomspace(lowest, top, 7)[1:-1]:
                for extra in (3.0, 10.0):
                    for width in (0.5, 1.0):
                        grids.append(bump_grid(steps, top, lowest, float(centre), extra, width))
    return grids


def stratified_batch(errors: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(indices, weights) of n pool samples: the n // 2 with the largest `errors`, plus the rest drawn at random.

    Weighted by the inverse of their chance to be drawn, the selection's mean squared error estimates the whole
    pool's (stratified sampling). On multimodal data a few samples that end in another mode dominate the error;
    the hard stratum keeps them in the tuning batch instead of leaving their number to chance.
    """
    pool = len(errors)
    if n >= pool:
        return torch.arange(pool), torch.ones(pool, dtype=torch.float64)
    hard = n // 2
    order = errors.nan_to_num(nan=math.inf).argsort(descending=True).cpu()  # a diverged sample counts as hard
    easy = order[hard:][torch.randperm(pool - hard, generator=torch.Generator().manual_seed(seed))[:n - hard]]
    weights = torch.cat([torch.ones(hard, dtype=torch.float64),
                         torch.full((n - hard,), (pool - hard) / (n - hard), dtype=torch.float64)])
    return torch.cat([order[:hard], easy]), weights


def landing_starts(teleport: GaussianFlow, sigma_max: float) -> list[float]:
    """Landing levels a teleported search starts from: `default_landing` and halfway from it to sigma_max in log sigma.

    Where the network takes over decides how many of the evaluations go to the high levels, where samples choose
    their mode; a local search seldom moves it far, so it starts from a low and a high landing.
    """
    low = default_landing(teleport, sigma_max)
    return sorted({low, math.sqrt(low * sigma_max)})


def family_search(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, sampler: str, steps: int, sigma_min: float,
                  sigma_max: float, cond: Tensor | None = None, teleport: GaussianFlow | None = None,
                  weights: Tensor | None = None, warm_start: bool = False, keep: int = 2) -> list[Tensor]:
    """The `keep` grids of `bump_candidates` with the least error on x: global starts for the local search.

    A local search from a standard grid can end far from the best grid, when the steps must move from where that
    grid puts them (many at the lowest levels, for Karras) to where the samples choose their mode. A coarse pass
    over a few-parameter family finds that region first. With `teleport` the candidates' tops are the
    `landing_starts` and each returned grid starts at its landing level (its teleported first step not included).
    """
    tops = [sigma_max] if teleport is None else landing_starts(teleport, sigma_max)
    head = torch.tensor([] if teleport is None else [sigma_max], dtype=torch.float64)
    candidates = bump_candidates(steps, tops, sigma_min)
    errors = [rms_error(denoiser, x, ref, torch.cat([head, grid]), sampler, cond, teleport, weights, warm_start)
              for grid in candidates]
    order = sorted(range(len(candidates)), key=lambda i: errors[i] if math.isfinite(errors[i]) else math.inf)
    return [candidates[i] for i in order[:keep]]


def tune_grid(denoiser: Callable[..., Tensor], x: Tensor, sampler: str, steps: int, schedule: Schedule,
              ref: Tensor | None = None, cond: Tensor | None = None, max_evals: int = 300,
              starts: Sequence[str] = START_SPACINGS, teleport: GaussianFlow | None = None,
              batch: int | None = None, warm_start: bool = False,
              progress: Callable[[int, int], None] | None = None) -> tuple[Tensor, float, float]:
    """`optimize_grid` from each standard grid in `starts` (and each of `landing_starts` with a teleport);
    `progress(done, total)` after each of those searches.

    Returns (grid, the best standard grid's error, the chosen grid's error). The search is local, and on
    multimodal data where it ends depends on where it starts, so several starts pay for themselves; "bump" in
    `starts` adds the two best grids of a coarse `family_search`. With `batch` smaller than len(x), x is a pool:
    the search runs on a `stratified_batch` of that size (the samples the standard grids in `starts`, or the
    default grid, get most wrong plus a weighted random draw of the rest), and the searches' results are compared,
    and the errors reported, on the whole pool, most of which no search has seen. Otherwise both are on x.
    """
    if ref is None:
        ref = reference_solution(denoiser, x, schedule.sigma_max, schedule.sigma_min, cond=cond)
    if not starts:
        raise ValueError("starts must name at least one start grid (a standard spacing or bump)")
    spacings = [spacing for spacing in starts if spacing != BUMP]
    standard = spacings or ["default"]  # what the stratified batch is drawn by
    weights, pool = None, None
    if batch is not None and batch < len(x):
        errors = torch.stack([per_sample_error(denoiser, x, ref, schedule.sigmas(steps, spacing), sampler, cond)
                              for spacing in standard])
        index, weights = stratified_batch(errors.amax(0), batch)
        pool, before = (x, ref, cond), float(errors.mean(1).nan_to_num(nan=math.inf).min().sqrt())
        x, ref = x[index.to(x.device)], ref[index.to(ref.device)]
        cond = None if cond is None else cond[index.to(cond.device)]
    landings = [None] if teleport is None else landing_starts(teleport, schedule.sigma_max)
    inits = [(schedule.sigmas(steps, spacing), landing) for spacing in spacings for landing in landings]
    n_standard = len(inits)
    if BUMP in starts:
        found = family_search(denoiser, x, ref, sampler, steps, schedule.sigma_min, schedule.sigma_max, cond, teleport,
                              weights, warm_start)
        inits += [(grid, None if teleport is None else float(grid[0])) for grid in found]
    results = []
    for init, landing in inits:
        results.append(optimize_grid(denoiser, x, sampler, steps, schedule.sigma_min, schedule.sigma_max, ref=ref,
                                     cond=cond, max_evals=max_evals, init=init, teleport=teleport, landing=landing,
                                     weights=weights, warm_start=warm_start))
        if progress is not None:
            progress(len(results), len(inits))
    if pool is None:
        grid, _, after = min(results, key=lambda r: r[2])
        plain = [r[1] for r in results[:n_standard]]
        return grid, min(plain) if plain else rms_error(denoiser, x, ref, schedule.sigmas(steps), sampler, cond), after
    pool_x, pool_ref, pool_cond = pool
    scored = [rms_error(denoiser, pool_x, pool_ref, grid, sampler, pool_cond, teleport, warm_start=warm_start)
              for grid, _, _ in results]
    best = min(range(len(results)), key=lambda i: scored[i] if math.isfinite(scored[i]) else math.inf)
    return results[best][0], before, scored[best]


def _saved_plans(run_dir: str | os.PathLike) -> tuple[Path, dict]:
    """(the run's grids.json, its entries by sampler and step count; empty if there is none)."""
    path = Path(run_dir) / GRIDS_FILE
    return path, json.loads(path.read_text()) if path.exists() else {}


def save_plan(run_dir: str | os.PathLike, plan: SamplingPlan) -> Path:
    """Store a plan in the run's grids.json (atomically), keyed by sampler and sampler steps.

    A teleported plan's Gaussian fit goes beside it as safetensors; learned coefficients go in the entry as a
    table of numbers; the plan's metadata (its tuning errors) as keys of the entry.
    """
    path, data = _saved_plans(run_dir)
    name = None
    if plan.teleport is not None:
        name = plan.teleport.save(Path(run_dir) / f"teleport-{plan.sampler}-{plan.steps}.safetensors").name
    data.setdefault(plan.sampler, {})[str(plan.steps)] = plan.entry(name)
    return atomic_write_json(path, data)


def load_plan(run_dir: str | os.PathLike, sampler: str, steps: int) -> SamplingPlan:
    """The plan saved for this sampler and step count; a clear error names the tuning command if absent."""
    path, data = _saved_plans(run_dir)
    entry = data.get(sampler, {}).get(str(steps))
    if entry is None:
        raise FileNotFoundError(f"no tuned {steps}-step grid for {sampler} in {path}; run "
                                f"`rediffuse tune-grid {run_dir} --sampler {sampler} --steps {steps}` first")
    return SamplingPlan.from_entry(entry, run_dir, sampler)
