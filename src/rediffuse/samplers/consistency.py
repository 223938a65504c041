"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) for a consistency function f(x, sigma).

x0 = f(x, sigmas[0]); at each further level tau of the grid: x = x0 + sqrt(tau^2 - sigma_min^2) z, x0 = f(x, tau).
One network evaluation per level; `rediffuse.core.consistency_models.sampling_sigmas` makes the 1-, 2- and N-step grids.
"""

from __future__ import annotations

import math

from torch import Tensor

from .common import Callback, Denoiser, Generator, noise_like, observed, steps


def sample_consistency(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                       callback: Callback | None = None, cond: Tensor | None = None,
                       sigma_min: float = 0.0) -> Tensor:
    """f at each level of the grid, re-noised to the next level (std sqrt(tau^2 - sigma_min^2)) until 0."""
    for i, sigma, sigma_next in steps(sigmas):
        x = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        if sigma_next > 0:
            x = x + math.sqrt(max(sigma_next**2 - sigma_min**2, 0.0)) * noise_like(x, generator)
    return x
