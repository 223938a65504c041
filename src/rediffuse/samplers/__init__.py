"""Samplers: plain functions `fn(denoiser, x, sigmas, *, generator=None, callback=None, **options) -> x0`.

`x` is the starting noise in VE form at `sigmas[0]` (see `rediffuse.samplers.generation.prior`), `sigmas` a
non-increasing grid ending in 0. No sampler knows which parameterisation or schedule trained the model. Research
options reach them as generic hooks (`common.History`, `common.FirstStep`); `rediffuse.tuning.plan` sets them.
Masked token diffusion has its own sampler, `sample_masked(model, z, steps, ...)` (`samplers.masked`), outside
`SAMPLERS`: it takes tokens and a step count, not noise and sigmas.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import Tensor

from .ancestral import ancestral_step, sample_ddim, sample_ddpm, sample_euler_ancestral
from .consistency import sample_consistency
from .common import FirstStep, History, Plan, noise_like
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s, sample_dpmpp_3m
from .euler import sample_euler, sample_heun
from .masked import categorical, masked_template, sample_masked
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
    "consistency": sample_consistency,
}

STOCHASTIC = {"ddpm", "euler-ancestral", "dpmpp-2m-sde", "euler-maruyama", "consistency"}
# Multistep samplers: they take a `history=` hook (`common.warm_history`) and skip zero-length steps.
WARM_STARTED = {"dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "unipc-bh1", "unipc-bh2", "ipndm", "lms"}
# Samplers that take a `first_step=` hook (after a teleport without a history: `GaussianFlow.exp_euler`).
GAUSSIAN_FIRST_STEP = {"ipndm", "lms"}
# Samplers that spend two network evaluations per step (one on the step to 0).
TWO_EVAL_SAMPLERS = {"heun", "dpmpp-2s"}


def get(name: str) -> Sampler:
    """A sampler function by registry name."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


# the samplers that scale their fresh noise by an `eta` option
TAKES_ETA = tuple(name for name, fn in SAMPLERS.items() if "eta" in inspect.signature(fn).parameters)


def sample(denoiser: Callable[..., Tensor], x: Tensor, sigmas: Tensor, name: str = "heun", **options) -> Tensor:
    """Run the named sampler from noise x along the grid sigmas (`options` go to the sampler function)."""
    return get(name)(denoiser, x, sigmas, **options)


__all__ = ["SAMPLERS", "STOCHASTIC", "WARM_STARTED", "GAUSSIAN_FIRST_STEP", "TWO_EVAL_SAMPLERS", "FirstStep",
           "History", "Plan", "get", "sample", "ancestral_step", "categorical", "masked_template", "sample_masked",
           "noise_like", "sample_consistency", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
           "sample_dpmpp_2s", "sample_dpmpp_3m", "sample_euler", "sample_euler_ancestral", "sample_euler_maruyama",
           "sample_heun", "sample_ipndm", "sample_lms", "sample_unipc_bh1", "sample_unipc_bh2"]
