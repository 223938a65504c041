"""Helpers shared by the samplers: grids as floats, noise with per-sample generators, callbacks, hook types."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]
Generator = torch.Generator | Sequence[torch.Generator] | None


class History(Protocol):
    """A starting history hook: (level, x carried there from sigma, D there) for each of `levels`, in that order."""

    def __call__(self, x: Tensor, sigma: float, levels: Sequence[float]) -> list[tuple[float, Tensor, Tensor]]: ...


class FirstStep(Protocol):
    """A first-step hook: x at sigma_next > 0 from x and its D at sigma, in place of the sampler's own first step."""

    def __call__(self, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor: ...


class Plan(Protocol):
    """Anything that samples from noise at sigmas[0] (`rediffuse.tuning.plan.SamplingPlan`, for one)."""

    sigmas: Tensor

    def run(self, denoiser: Denoiser, noise: Tensor, *, cond: Tensor | None = None, generator: Generator = None,
            callback: Callback | None = None) -> Tensor: ...


def grid(sigmas: Tensor | Sequence[float]) -> list[float]:
    """The sigma grid as Python floats (float64 on the host; no device syncs in the loop)."""
    values = sigmas.tolist() if isinstance(sigmas, Tensor) else [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError("a sigma grid needs at least two entries (the last one usually 0)")
    if any(b > a for a, b in zip(values, values[1:])):
        raise ValueError("sigmas must be non-increasing (from sigma_max down to 0)")
    return values


def noise_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Standard normal noise of x's shape; a list of generators draws sample i from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device)
                        for g in generator])


def call(denoiser: Denoiser, x: Tensor, sigma: float, cond: Tensor | None) -> Tensor:
    """D(x, sigma[, cond]) with sigma a float."""
    return denoiser(x, sigma) if cond is None else denoiser(x, sigma, cond)


def report(callback: Callback | None, i: int, x: Tensor, sigma: float, sigma_next: float,
           denoised: Tensor) -> None:
    """Send one step's state to the callback, if any."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def steps(sigmas: Tensor | Sequence[float], skip_repeats: bool = False) -> Iterator[tuple[int, float, float]]:
    """(i, sigma, sigma_next) for each step of a validated grid; optionally without (near) zero-length steps.

    Multistep samplers skip steps shorter than 1e-9 relative: two history nodes that close would make their
    interpolation weights singular, and the step itself changes x by nothing measurable.
    """
    s = grid(sigmas)
    for i, (sigma, sigma_next) in enumerate(zip(s, s[1:])):
        if not (skip_repeats and sigma_next >= sigma * (1 - 1e-9)):
            yield i, sigma, sigma_next


def observed(denoiser: Denoiser, x: Tensor, i: int, sigma: float, sigma_next: float, cond: Tensor | None,
             callback: Callback | None) -> Tensor:
    """D(x, sigma), also reported to the callback as step i."""
    denoised = call(denoiser, x, sigma, cond)
    report(callback, i, x, sigma, sigma_next, denoised)
    return denoised


def warm_history(history: History | None, x: Tensor, sigmas: Tensor | Sequence[float], count: int,
                 log_spaced: bool = True) -> list[tuple[float, Tensor, Tensor]]:
    """(sigma, x, D) at `count` levels above the grid's first, oldest first, from a `History` hook.

    A multistep sampler that starts below sigma_max (after a teleport, `rediffuse.tuning.teleport`) has no history
    and must take first-order steps; a hook that knows what the model does above the start (a Gaussian standing in
    for it) fills the history at no network cost. The levels continue the first step's spacing, in log sigma
    (exponential integrators) or in sigma (Adams in sigma).
    """
    s = grid(sigmas)
    if history is None or count < 1 or s[1] == 0 or s[1] >= s[0] * (1 - 1e-9):
        return []
    levels = [s[0] * (s[0] / s[1]) ** k if log_spaced else s[0] + k * (s[0] - s[1]) for k in range(count, 0, -1)]
    return history(x, s[0], levels)


def log_sigma_history(history: History | None, x: Tensor, sigmas: Tensor | Sequence[float],
                      order: int) -> tuple[list[float], list[Tensor]]:
    """Newest-first (lambda = -log sigma, D) history of an exponential multistep sampler, from the hook or empty."""
    lams: list[float] = []
    ds: list[Tensor] = []
    for level, _, denoised in warm_history(history, x, sigmas, order - 1):
        lams.insert(0, -math.log(level))
        ds.insert(0, denoised)
    return lams, ds
