"""First- and second-order ODE samplers on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma."""

from __future__ import annotations

import math

from torch import Tensor

from .common import Callback, Denoiser, Generator, call, grid, noise_like, observed, report, steps


def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                 callback: Callback | None = None, cond: Tensor | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE (equal to DDIM with eta=0; Song et al. 2021)."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        x = denoised + (sigma_next / sigma) * (x - denoised)
    return x


def sample_heun(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                callback: Callback | None = None, cond: Tensor | None = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Heun's 2nd-order method with optional churn (Karras et al. 2022, Algorithm 2); 2N-1 evaluations."""
    s = grid(sigmas)
    steps = len(s) - 1
    for i, (sigma, sigma_next) in enumerate(zip(s, s[1:])):
        gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise_like(x, generator)
        denoised = call(denoiser, x, sigma_hat, cond)
        report(callback, i, x, sigma_hat, sigma_next, denoised)
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            d_next = (x_next - call(denoiser, x_next, sigma_next, cond)) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
        x = x_next
    return x
