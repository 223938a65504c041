"""Generating samples: prior noise with per-sample seeds, batching, and the sampler (or sampling plan) call."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import torch
from torch import Tensor

from rediffuse import samplers
from rediffuse.errors import NonFiniteError
from rediffuse.samplers.common import Plan
from rediffuse.core.schedules import Schedule


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


class Ranks(Protocol):
    """The processes sharing a draw (`rediffuse.distributed.World`): this one's block of items, and a gather."""

    size: int

    def block(self, n: int) -> range: ...

    def gather(self, obj: Any) -> list[Any]: ...


def _to_cpu(info: dict[str, Any]) -> dict[str, Any]:
    """A sampler callback record with its tensors on the CPU (to send to the other ranks)."""
    return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in info.items()}


@torch.no_grad()
def generate(denoiser: Callable[..., Tensor], schedule: Schedule, shape: Sequence[int], *, n: int,
             sampler: str = "heun", steps: int = 20, spacing: str = "default", seed: int = 0,
             batch_size: int = 256, cond: Tensor | None = None, device: torch.device | str = "cpu",
             sigmas: Tensor | None = None, callback: Callable | None = None,
             progress: Callable[[int], None] | None = None, plan: Plan | None = None, world: Ranks | None = None,
             **options: Any) -> Tensor:
    """n samples of per-sample shape `shape`; sample i depends only on (seed, i), not on batch_size.

    With `plan` (a `samplers.common.Plan`: `rediffuse.tuning.plan.SamplingPlan`, for one) it samples, and
    its grid replaces sampler, steps, spacing, sigmas and options. With a `world` of several ranks, rank r
    draws a contiguous block of the batches and every rank returns all n samples, equal to one process's bit
    for bit; callback records are replayed on every rank in index order (parallel over batches: use
    batch_size <= n / ranks).
    """
    if sigmas is None and plan is None:
        sigmas = schedule.sigmas(steps, spacing)
    starts = range(0, n, batch_size)
    split = world is not None and world.size > 1
    records: list[dict[str, Any]] = []
    record = (lambda info: records.append(_to_cpu(info))) if split and callback is not None else callback
    out = []
    for b in (world.block(len(starts)) if split else range(len(starts))):
        idx = list(range(starts[b], min(n, starts[b] + batch_size)))
        x = sample_batch(denoiser, schedule, shape, idx, sigmas, sampler, seed, cond, device, record, plan, **options)
        out.append(x.cpu() if split else x)
        if progress is not None:
            progress(len(idx))
    if not split:
        return torch.cat(out)
    parts = world.gather((out, records))
    for info in (info for _, rank_records in parts for info in rank_records):
        callback(info)  # records exist only when there is a callback
    return torch.cat([x for rank_batches, _ in parts for x in rank_batches]).to(device)
