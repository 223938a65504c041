"""Samplers: plain functions `fn(denoiser, x, sigmas, *, generator=None, callback=None, **options) -> x0`.

`x` is the starting noise in VE form at `sigmas[0]` (see `rediffuse.sampling.prior`), `sigmas` a
non-increasing grid ending in 0. No sampler knows which parameterisation or schedule trained the model.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .ancestral import ancestral_step, sample_ddim, sample_ddpm, sample_euler_ancestral
from .common import noise_like
from .euler import sample_euler, sample_heun

Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "euler-ancestral": sample_euler_ancestral,
}

STOCHASTIC = {"ddpm", "euler-ancestral"}


def get(name: str) -> Sampler:
    """A sampler function by registry name."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sample(denoiser: Callable[..., Tensor], x: Tensor, sigmas: Tensor, name: str = "heun", **options) -> Tensor:
    """Run the named sampler from noise x along the grid sigmas."""
    return get(name)(denoiser, x, sigmas, **options)


__all__ = ["SAMPLERS", "STOCHASTIC", "get", "sample", "ancestral_step", "noise_like", "sample_ddim",
           "sample_ddpm", "sample_euler", "sample_euler_ancestral", "sample_heun"]
