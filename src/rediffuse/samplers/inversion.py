"""Inversion: data mapped back to noise along the probability-flow ODE, dx/dsigma = (x - D(x, sigma)) / sigma,
run upward over a sampler's grid (DDIM inversion for Euler; Song et al. 2021, Mokady et al. 2023), and the
editing draw that starts part of the way down (SDEdit, Meng et al. 2022).

A grid sigmas[0] > ... > sigmas[-2] > sigmas[-1] = 0: `invert` takes the data as the state at sigmas[-2] and
returns the noise at sigmas[0]; `samplers.sample` over sigmas[:-1] maps it back to sigmas[-2]. The round trip's
error falls as the solver's order (Euler 1, Heun 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .common import Denoiser, Generator, call, grid, noise_like

SOLVERS = ("euler", "heun")


def invert(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, solver: str = "euler",
           cond: Tensor | None = None) -> Tensor:
    """x (data, taken at the grid's smallest positive level) carried up the ODE to sigmas[0]."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown inversion solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    levels = [s for s in grid(sigmas) if s > 0][::-1]  # upward: sigmas[-2], ..., sigmas[0]
    for sigma, sigma_next in zip(levels, levels[1:]):
        d = (x - call(denoiser, x, sigma, cond)) / sigma
        x_next = x + (sigma_next - sigma) * d
        if solver == "heun":
            d_next = (x_next - call(denoiser, x_next, sigma_next, cond)) / sigma_next
            x_next = x + (sigma_next - sigma) * 0.5 * (d + d_next)
        x = x_next
    return x


def strength_start(steps: int, strength: float) -> int:
    """The grid index where an edit of `strength` in (0, 1] starts: strength 1 starts at the top (all of the
    grid's steps), 0.5 halfway down (half of them), as diffusers' image-to-image counts steps."""
    if not 0 < strength <= 1 or not math.isfinite(strength):
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    return min(steps - 1, steps - max(1, round(steps * strength)))


def noised_to(x: Tensor, sigma: float, generator: Generator = None) -> Tensor:
    """x + sigma * eps: the data on its way to the level an SDEdit starts from."""
    return x + sigma * noise_like(x, generator) if sigma > 0 else x.clone()


def edit_grid(sigmas: Tensor, strength: float) -> Tensor:
    """The part of a sampler's grid an SDEdit of `strength` runs (from its start level down to 0)."""
    start = strength_start(len(sigmas) - 1, strength)
    return torch.as_tensor(sigmas[start:])
