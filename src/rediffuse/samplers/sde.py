"""The reverse-time SDE (Song et al. 2021) in VE form, with an optional Langevin corrector.

The forward VE SDE dx = g dW with g^2 = d(sigma^2)/dsigma has the reverse dx = -g^2 score + g dW_bar. An
Euler-Maruyama step from sigma down to sigma' < sigma, with score = (D - x) / sigma^2, is
x' = x + (sigma^2 - sigma'^2) score + sqrt(sigma^2 - sigma'^2) z. The Langevin corrector (Algorithm 4, VE:
alpha = 1) targets p_sigma' with x <- x + eps score + sqrt(2 eps) z, eps = 2 (snr |z| / |score|)^2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .common import Callback, Denoiser, Generator, call, noise_like, observed, steps
from .multistep import combine


def mean_norm(v: Tensor) -> Tensor:
    """The per-sample Euclidean norm averaged over the batch (a 0-dim tensor on v's device)."""
    return v.flatten(1).norm(dim=1).mean()


def langevin_step(denoiser: Denoiser, x: Tensor, sigma: float, snr: float, generator: Generator,
                  cond: Tensor | None) -> Tensor:
    """One Langevin corrector step at noise level sigma (one NFE), step size from the signal-to-noise rule.

    As in Song et al.'s reference code the norms are batch means, so with a corrector sample i depends on
    its batch. Per-sample norms (Algorithm 4 read literally) make eps heavy-tailed in low dimension (a ratio
    of two chi-square variables): on 8gaussians they throw samples out to |x| ~ 700.
    """
    score = (call(denoiser, x, sigma, cond) - x) / sigma**2
    z = noise_like(x, generator)
    eps = 2 * (snr * mean_norm(z) / mean_norm(score).clamp_min(torch.finfo(x.dtype).tiny)) ** 2
    return x + eps * score + (2 * eps).sqrt() * z


def sample_euler_maruyama(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                          callback: Callback | None = None, cond: Tensor | None = None, corrector_steps: int = 0,
                          snr: float = 0.16, s_noise: float = 1.0) -> Tensor:
    """Euler-Maruyama on the reverse VE SDE, then `corrector_steps` Langevin steps at each new sigma > 0.

    The step to sigma = 0 returns D (Tweedie's denoising step). NFE: N + corrector_steps * (number of
    steps whose target sigma is > 0), so N + corrector_steps * (N - 1) on a grid ending in 0.
    """
    for i, sigma, sigma_next in steps(sigmas):
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        if sigma_next == 0:
            x = denoised
            continue
        var = sigma**2 - sigma_next**2
        x = combine((sigma_next / sigma) ** 2, x, [var / sigma**2], [denoised])
        x.add_(noise_like(x, generator), alpha=math.sqrt(var) * s_noise)
        for _ in range(corrector_steps):
            x = langevin_step(denoiser, x, sigma_next, snr, generator, cond)
    return x
