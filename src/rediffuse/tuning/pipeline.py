"""The tuning pipeline: from a model and a pool of starting noise to a `SamplingPlan`.

Stages: the reference solutions of the pool (`reference.reference_solution`), the grid search (`grids.tune_grid`,
on a stratified batch of the pool), then optionally the teleport's fitted jump (`teleport.fit_jump`) and iPNDM's
learned coefficients (`coefficients.fit_coefficients`). Both fits follow one hold-out policy
(`grids.held_out_split`: the pool's last quarter), and each is kept only where it beats the plan without it there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from torch import Tensor

from rediffuse.core.schedules import Schedule
from rediffuse.tuning.coefficients import fit_coefficients
from rediffuse.tuning.grids import START_SPACINGS, held_out_split, plan_rms, tune_grid
from rediffuse.tuning.plan import SamplingPlan, check_options
from rediffuse.tuning.reference import reference_solution
from rediffuse.tuning.teleport import GaussianFlow, fit_jump

Log = Callable[[str], None]
JUMP_RANK = 32  # whitened directions the fitted jump regresses on, at most


def _say(log: Log | None, message: str) -> None:
    if log is not None:
        log(message)


def with_fitted_jump(plan: SamplingPlan, denoiser: Callable[..., Tensor], pool: Tensor, ref: Tensor, *,
                     log: Log | None = None, progress: Callable[[int, int], None] | None = None) -> SamplingPlan:
    """The plan with its teleport's jump fitted on the pool's fit part, if that does better on the held-out part."""
    if plan.teleport is None:
        raise ValueError("fitting a jump needs a teleported plan; tune with a teleport first")
    fit = held_out_split(len(pool))
    rank = min(JUMP_RANK, fit // 4 - 1, len(plan.teleport.evals))
    if rank < 1 or fit == len(pool):
        _say(log, f"--fit-jump: a pool of {len(pool)} draws is too small to fit and check a jump; skipped")
        return plan
    jumped = replace(plan, teleport=fit_jump(denoiser, plan.teleport, pool[:fit], float(plan.sigmas[0]),
                                             float(plan.sigmas[1]), rank=rank))
    plain, fitted = (plan_rms(p, denoiser, pool[fit:], ref[fit:]) for p in (plan, jumped))
    meta = {**plan.meta, "held_out_rms_gaussian_jump": plain, "held_out_rms_fitted_jump": fitted}
    _say(log, f"fitted jump: RMS error on the {len(pool) - fit} held-out draws {plain:.3e} (Gaussian's) -> "
              f"{fitted:.3e}{'' if fitted < plain else ' (not kept)'}")
    return replace(jumped if fitted < plain else plan, meta=meta)


def with_learned_coefficients(plan: SamplingPlan, denoiser: Callable[..., Tensor], pool: Tensor, ref: Tensor, *,
                              iters: int, batch: int, cond: Tensor | None = None, log: Log | None = None,
                              progress: Callable[[int, int], None] | None = None) -> SamplingPlan:
    """The iPNDM plan with per-step coefficients fitted to the pool (the fixed ones where no fit beats them)."""
    check_options(plan.sampler, plan.teleport, plan.warm_start, coefficients=True)
    table, fixed, learned = fit_coefficients(denoiser, pool, ref, plan.sigmas, teleport=plan.teleport,
                                             warm_start=plan.warm_start, cond=cond, iters=iters, batch=batch)
    _say(log, f"learned coefficients: RMS error on the {len(pool) - held_out_split(len(pool))} held-out draws "
              f"{fixed:.3e} (iPNDM's) -> {learned:.3e}")
    meta = {**plan.meta, "held_out_rms_fixed_coefficients": fixed, "held_out_rms_learned_coefficients": learned}
    return replace(plan, coefficients=table, meta=meta)


def tune(denoiser: Callable[..., Tensor], schedule: Schedule, sampler: str, steps: int, pool: Tensor, *,
         ref: Tensor | None = None, cond: Tensor | None = None, batch: int | None = None, max_evals: int = 300,
         starts: Sequence[str] = START_SPACINGS, teleport: GaussianFlow | None = None, warm_start: bool = False,
         jump: bool = False, learn_iters: int = 0, learn_batch: int | None = None,
         log: Log | None = None, progress: Callable[[int, int], None] | None = None) -> SamplingPlan:
    """A plan tuned to the model on `pool` (starting points in VE form at sigma_max; `ref` their reference solutions).

    The grid search runs on a stratified `batch` of the pool; with `teleport` the grid's first step is its jump,
    with `warm_start` too the multistep history starts from it, `jump` then fits the jump, and `learn_iters` > 0
    fits iPNDM's coefficients by that many Adam steps on batches of `learn_batch` (default: `batch`);
    `progress(done, total)` after each grid search.
    """
    if jump and teleport is None:
        raise ValueError("fitting the jump needs a teleport; pass teleport= (a GaussianFlow)")
    check_options(sampler, teleport, warm_start, coefficients=learn_iters > 0)
    if ref is None:
        ref = reference_solution(denoiser, pool, schedule.sigma_max, schedule.sigma_min, cond=cond)
    grid, before, after = tune_grid(denoiser, pool, sampler, steps, schedule, ref=ref, cond=cond,
                                    max_evals=max_evals, starts=starts, teleport=teleport, batch=batch,
                                    warm_start=warm_start, progress=progress)
    how = " (teleported, warm start)" if warm_start else " (teleported)" if teleport else ""
    _say(log, f"{sampler}, {steps} steps{how}: RMS error on the {len(pool)} tuning draws {before:.3e} "
              f"(best standard grid) -> {after:.3e}")
    plan = SamplingPlan(sampler, grid, teleport, warm_start,
                        meta={"tuning_rms_before": before, "tuning_rms_after": after})
    if jump:
        plan = with_fitted_jump(plan, denoiser, pool, ref, log=log)
    if learn_iters:
        plan = with_learned_coefficients(plan, denoiser, pool, ref, iters=learn_iters,
                                         batch=learn_batch or batch or len(pool), cond=cond, log=log)
    return plan
