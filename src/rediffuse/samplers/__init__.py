"""Samplers: plain functions `fn(denoiser, x, sigmas, *, generator=None, callback=None, **options) -> x0`.

`x` is the starting noise in VE form at `sigmas[0]` (see `rediffuse.samplers.generation.prior`), `sigmas` a
non-increasing grid ending in 0. No sampler knows which parameterisation or schedule trained the model.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from rediffuse.tuning.teleport import GaussianFlow, teleported
from .ancestral import ancestral_step, sample_ddim, sample_ddpm, sample_euler_ancestral
from .common import noise_like
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s, sample_dpmpp_3m
from .euler import sample_euler, sample_heun
from .multistep import sample_ipndm, sample_lms
from .sde import sample_euler_maruyama
from .unipc import sample_unipc_bh1, sample_unipc_bh2

Sampler = Callable[..., Tensor]

SAMPLERS: dict[str, Sampler] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "euler-ancestral": sample_euler_ancestral,
    "dpmpp-2m": sample_dpmpp_2m,
    "dpmpp-3m": sample_dpmpp_3m,
    "dpmpp-2s": sample_dpmpp_2s,
    "dpmpp-2m-sde": sample_dpmpp_2m_sde,
    "unipc-bh1": sample_unipc_bh1,
    "unipc-bh2": sample_unipc_bh2,
    "ipndm": sample_ipndm,
    "lms": sample_lms,
    "euler-maruyama": sample_euler_maruyama,
}

STOCHASTIC = {"ddpm", "euler-ancestral", "dpmpp-2m-sde", "euler-maruyama"}
# Multistep samplers: after a teleport their history can start full (`common.warm_history`).
WARM_STARTED = {"dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "unipc-bh1", "unipc-bh2", "ipndm", "lms"}
# Samplers whose first step after a teleport (without a warm history) is `GaussianFlow.exp_euler`.
GAUSSIAN_FIRST_STEP = {"ipndm", "lms"}


def get(name: str) -> Sampler:
    """A sampler function by registry name."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sample(denoiser: Callable[..., Tensor], x: Tensor, sigmas: Tensor, name: str = "heun", *,
           teleport: GaussianFlow | None = None, warm_start: bool = False, **options) -> Tensor:
    """Run the named sampler from noise x along the grid sigmas.

    With `teleport` (a `rediffuse.tuning.teleport.GaussianFlow`) the first step, sigmas[0] -> sigmas[1], is the
    Gaussian's closed-form flow and costs no network evaluation. With `warm_start` too, a multistep sampler
    starts with the Gaussian's history above the landing instead of lower-order steps; without it, the first
    network step of ipndm and lms solves the Gaussian's part of the model exactly (`GaussianFlow.exp_euler`).
    """
    fn = get(name)
    if warm_start and (teleport is None or name not in WARM_STARTED):
        raise ValueError(f"warm_start needs a teleport and a multistep sampler ({', '.join(sorted(WARM_STARTED))})"
                         f"; got {name} {'with' if teleport else 'without'} a teleport")
    if teleport is not None:
        x, sigmas = teleported(x, sigmas, teleport)
        if warm_start:
            options["warm"] = teleport
        elif name in GAUSSIAN_FIRST_STEP:
            options["gaussian"] = teleport
    return fn(denoiser, x, sigmas, **options)


__all__ = ["SAMPLERS", "STOCHASTIC", "WARM_STARTED", "GAUSSIAN_FIRST_STEP", "get", "sample", "ancestral_step",
           "noise_like", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_2s",
           "sample_dpmpp_3m", "sample_euler", "sample_euler_ancestral", "sample_euler_maruyama", "sample_heun",
           "sample_ipndm", "sample_lms", "sample_unipc_bh1", "sample_unipc_bh2"]
