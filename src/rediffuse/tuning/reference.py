"""The high-accuracy reference a tuned grid or learned solver is scored against: an adaptive ODE solve.

The probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma is integrated in u = log sigma, where it reads
dx/du = x - D(x, e^u), from sigma_max down to sigma_min by torchdiffeq's adaptive Dormand-Prince 8(5,3) pair in
float64, with a per-element (max-norm) error control, so that no sample of a batch is solved more loosely than
the tolerance; the last step, sigma_min -> 0, is D(x, sigma_min), as every sampler's final step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

TOLERANCE = 1e-8  # relative and absolute tolerance of the reference solve, per element
# A denoiser in lower precision (a float32 network) rounds at about its epsilon; a tolerance below this many
# epsilons would make the step control chase that noise at no gain in accuracy.
EPSILONS = 100


def _max_norm(error: Tensor) -> Tensor:
    """The largest scaled error: every element, and so every sample, meets the tolerance."""
    return error.abs().max()


def tolerance(dtype: torch.dtype) -> float:
    """The reference's tolerance for inputs (and so a denoiser) of this dtype: 1e-8, or 100 epsilons if larger."""
    return max(TOLERANCE, EPSILONS * torch.finfo(dtype).eps)


@torch.no_grad()
def reference_solution(denoiser: Callable[..., Tensor], x: Tensor, sigma_max: float, sigma_min: float,
                       cond: Tensor | None = None, *, rtol: float | None = None, atol: float | None = None) -> Tensor:
    """The probability-flow ODE solution from x at sigma_max to sigma 0: adaptive dopri8 at rtol = atol = 1e-8.

    For float32 inputs the default tolerance is 1.2e-5 (`tolerance`). Against scipy's DOP853 at rtol 1e-10 the
    float64 error is about 1e-7 on the `ring8` mixture, far below the 1e-4 and larger errors it scores.
    """
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"the reference solves from sigma_max down to a positive sigma_min; got {sigma_max} -> "
                         f"{sigma_min}")
    dtype = x.dtype

    def slope(u: Tensor, y: Tensor) -> Tensor:
        sigma = math.exp(float(u))
        denoised = denoiser(y.to(dtype), sigma) if cond is None else denoiser(y.to(dtype), sigma, cond)
        return y - denoised.to(torch.float64)

    span = torch.tensor([math.log(sigma_max), math.log(sigma_min)], dtype=torch.float64, device=x.device)
    tol = tolerance(dtype)
    rtol, atol = (tol if rtol is None else rtol), (tol if atol is None else atol)
    end = odeint(slope, x.to(torch.float64), span, method="dopri8", rtol=rtol, atol=atol,
                 options={"norm": _max_norm})[-1]
    out = denoiser(end.to(dtype), sigma_min) if cond is None else denoiser(end.to(dtype), sigma_min, cond)
    return out.to(dtype)
