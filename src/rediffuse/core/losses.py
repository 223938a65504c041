"""The one training loss: lambda(sigma) * |D(x0 + sigma eps, sigma) - x0|^2, with its classic weightings.

Each classic loss is this loss with a weighting (per unit of mean squared x0 error):

| weighting | lambda(sigma)                 | equals                                   |
|-----------|-------------------------------|------------------------------------------|
| eps       | 1/sigma^2                     | eps-prediction MSE (Ho et al. 2020)      |
| v         | (1+sigma^2)/sigma^2           | v-prediction MSE (Salimans & Ho 2022)    |
| edm       | (sigma^2+sd^2)/(sigma sd)^2   | EDM loss (Karras et al. 2022)            |
| flow      | ((1+sigma)/sigma)^2           | flow-matching velocity MSE (Lipman 2022) |
| min-snr   | min(1/sigma^2, gamma)         | min-SNR-gamma (Hang et al. 2023)         |
| x0        | 1                             | x0-prediction MSE                        |
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rediffuse.core.denoisers import expand_as

WEIGHTINGS = ("eps", "v", "edm", "flow", "min-snr", "x0")


def loss_weight(weighting: str, sigma: Tensor, sigma_data: float = 0.5, gamma: float = 5.0) -> Tensor:
    """lambda(sigma) of a named weighting, per unit of mean squared x0 error."""
    table: dict[str, Callable[[Tensor], Tensor]] = {
        "eps": lambda s: 1 / s**2,
        "v": lambda s: (1 + s**2) / s**2,
        "edm": lambda s: (s**2 + sigma_data**2) / (s * sigma_data) ** 2,
        "flow": lambda s: ((1 + s) / s) ** 2,
        "min-snr": lambda s: torch.clamp(1 / s**2, max=gamma),
        "x0": lambda s: torch.ones_like(s),
    }
    if weighting not in table:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    return table[weighting](sigma)


def denoising_loss(denoiser: Callable[..., Tensor], x0: Tensor, sigma: Tensor, noise: Tensor,
                   weighting: str = "edm", cond: Tensor | None = None, sigma_data: float = 0.5,
                   gamma: float = 5.0, reduction: str = "mean") -> Tensor:
    """Weighted denoising loss; per-sample means over non-batch dims, then `reduction` ('mean' or 'none').

    `sigma` is a float64 per-sample vector; `noise` is eps ~ N(0, I) of x0's shape.
    """
    x = x0 + expand_as(sigma, x0) * noise
    denoised = denoiser(x, sigma) if cond is None else denoiser(x, sigma, cond)
    err = (denoised - x0).pow(2).flatten(1).mean(1)
    weight = loss_weight(weighting, sigma, sigma_data, gamma).to(err.dtype)
    per_sample = weight * err
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    return per_sample.mean()
