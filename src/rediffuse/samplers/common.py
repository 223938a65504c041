"""Helpers shared by the samplers: grids as floats, noise with per-sample generators, callbacks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rediffuse.tuning.teleport import GaussianFlow

Denoiser = Callable[..., Tensor]
Callback = Callable[[dict[str, Any]], None]
Generator = torch.Generator | Sequence[torch.Generator] | None


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


def warm_history(warm: "GaussianFlow | None", x: Tensor, sigmas: Tensor | Sequence[float], count: int,
                 log_spaced: bool = True) -> list[tuple[float, Tensor, Tensor]]:
    """(sigma, x, D) at `count` levels above the grid's first, oldest first, from a Gaussian standing in for the model.

    A multistep sampler that starts where a teleport (`rediffuse.tuning.teleport`) lands has no history and must take
    first-order steps; above the landing the Gaussian is what the model was taken to be, so its exact D along
    its own flow fills the history at no network cost. The levels continue the first step's spacing, in log
    sigma (exponential integrators) or in sigma (Adams in sigma).
    """
    s = grid(sigmas)
    if warm is None or count < 1 or s[1] == 0 or s[1] >= s[0] * (1 - 1e-9):
        return []
    levels = [s[0] * (s[0] / s[1]) ** k if log_spaced else s[0] + k * (s[0] - s[1]) for k in range(count, 0, -1)]
    return warm.history(x, s[0], levels)


def log_sigma_history(warm: "GaussianFlow | None", x: Tensor, sigmas: Tensor | Sequence[float],
                      order: int) -> tuple[list[float], list[Tensor]]:
    """Newest-first (lambda = -log sigma, D) history of an exponential multistep sampler, warm-started or empty."""
    lams: list[float] = []
    ds: list[Tensor] = []
    for level, _, denoised in warm_history(warm, x, sigmas, order - 1):
        lams.insert(0, -math.log(level))
        ds.insert(0, denoised)
    return lams, ds
