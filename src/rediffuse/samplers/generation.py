"""Generating samples: prior noise with per-sample seeds, batching, and the sampler (or sampling plan) call."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from rediffuse import samplers
from rediffuse.errors import NonFiniteError
from rediffuse.samplers.common import Plan
from rediffuse.schedules import Schedule


def sample_generators(seed: int, indices: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample index, seeded from (seed, index), so sample i never depends on the batch."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + int(i)) for i in indices]


def prior(schedule: Schedule, sigma_max: float, shape: Sequence[int],
          generator: torch.Generator | Sequence[torch.Generator] | None = None,
          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Starting noise in VE form at sigma_max: N(0, prior_std^2 I) (sqrt(1+sigma^2) for VP and flow)."""
    x = torch.empty(tuple(shape), device=device, dtype=dtype)
    return samplers.noise_like(x, generator) * schedule.prior_std(sigma_max)


@torch.no_grad()
def sample_batch(denoiser: Callable[..., Tensor], schedule: Schedule, shape: Sequence[int], idx: Sequence[int],
                 sigmas: Tensor, sampler: str, seed: int, cond: Tensor | None, device: torch.device | str,
                 callback: Callable | None = None, plan: Plan | None = None, **options) -> Tensor:
    """Samples idx (consecutive indices), each from its own (seed, index) generator; by `plan` if given."""
    gens = sample_generators(seed, idx, device)
    top = float((sigmas if plan is None else plan.sigmas)[0])
    x = prior(schedule, top, (len(idx), *shape), gens, device)
    batch_cond = None if cond is None else cond[idx[0]: idx[-1] + 1].to(device)
    if plan is not None:
        return plan.run(denoiser, x, cond=batch_cond, generator=gens, callback=callback)
    if batch_cond is not None:
        options["cond"] = batch_cond
    return samplers.sample(denoiser, x, sigmas, sampler, generator=gens, callback=callback, **options)


def require_finite(x: Tensor, what: str = "sampling") -> Tensor:
    """x itself, or NonFiniteError (nothing written) when it holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{what} produced NaN or infinite values ({int((~torch.isfinite(x)).sum())} of "
                             f"{x.numel()}); nothing was written. Check --guidance and the sampler options, or "
                             "sample an earlier checkpoint")
    return x


@torch.no_grad()
def generate(denoiser: Callable[..., Tensor], schedule: Schedule, shape: Sequence[int], *, n: int,
             sampler: str = "heun", steps: int = 20, spacing: str = "default", seed: int = 0,
             batch_size: int = 256, cond: Tensor | None = None, device: torch.device | str = "cpu",
             sigmas: Tensor | None = None, callback: Callable | None = None,
             progress: Callable[[int], None] | None = None, plan: Plan | None = None, **options) -> Tensor:
    """n samples of per-sample shape `shape`; sample i depends only on (seed, i), not on batch_size.

    With `plan` (a `samplers.common.Plan`: `rediffuse.tuning.plan.SamplingPlan`, for one) it samples, and
    its grid replaces sampler, steps, spacing, sigmas and options.
    """
    sigmas = schedule.sigmas(steps, spacing) if sigmas is None else sigmas
    out = []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        out.append(sample_batch(denoiser, schedule, shape, idx, sigmas, sampler, seed, cond, device, callback, plan,
                                **options))
        if progress is not None:
            progress(len(idx))
    return torch.cat(out)
