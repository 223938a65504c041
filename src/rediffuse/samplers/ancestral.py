"""Ancestral samplers: the reverse Markov chain x_sigma -> x_sigma' drawn from the Gaussian posterior.

For the VE process x = x0 + sigma eps, q(x_{sigma'} | x_sigma, x0) has mean x0 + (sigma'/sigma)^2 (x_sigma - x0)
and variance sigma'^2 (1 - sigma'^2/sigma^2). DDPM's chain (Ho et al. 2020) is this posterior with x0 replaced
by D(x, sigma) on the schedule's discrete times (the VP chain is the same chain rescaled by sqrt(abar)).
DDIM (Song et al. 2021) scales the posterior's noise by eta: eta=1 is DDPM, eta=0 the deterministic ODE step.
"""

from __future__ import annotations

import math

from torch import Tensor

from .common import Callback, Denoiser, Generator, noise_like, observed, steps


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): the deterministic target level and the fresh-noise std of one step."""
    if sigma_next == 0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def sample_ddim(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                callback: Callback | None = None, cond: Tensor | None = None, eta: float = 0.0,
                s_noise: float = 1.0) -> Tensor:
    """DDIM with stochasticity eta (Song et al. 2021): x' = D + sigma_down eps_hat + sigma_up z."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + (sigma_down / sigma) * (x - denoised)
        if sigma_up > 0:
            x = x + sigma_up * s_noise * noise_like(x, generator)
    return x


def sample_euler_ancestral(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                           callback: Callback | None = None, cond: Tensor | None = None, eta: float = 1.0,
                           s_noise: float = 1.0) -> Tensor:
    """Euler ancestral: an Euler step to sigma_down, then fresh noise of std sigma_up (eta=1 by default)."""
    return sample_ddim(denoiser, x, sigmas, generator=generator, callback=callback, cond=cond, eta=eta,
                       s_noise=s_noise)


def sample_ddpm(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                callback: Callback | None = None, cond: Tensor | None = None) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): the exact-posterior-variance Markov chain.

    Use it on the schedule's own discrete grid (for vp-linear, `schedule.sigmas(1000)`).
    """
    return sample_ddim(denoiser, x, sigmas, generator=generator, callback=callback, cond=cond, eta=1.0)
