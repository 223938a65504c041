"""DDPM's discrete-time variational bound in bits/dim (Ho et al. 2020, section 3.3, eq. 5 and the decoder L_0).

With 1-based t as in the paper (index t - 1 into the schedule's arrays), for 8-bit data x0 on the grid
k/127.5 - 1:

    -log P(x0) <= L_T + sum_{t=2}^T L_{t-1} + L_0,
    L_T     = KL(q(x_T | x0) || N(0, I)),
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),
    L_0     = -log p(x0 | x_1), a Gaussian integrated over each value's bin of width 2/255 (edges to +-inf).

The posterior q(x_{t-1} | x_t, x0) has mean c0 x0 + c1 x_t, c0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t),
and variance beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t); the model's mean puts D(x, sigma_t) for x0, so
the means differ by c0 (x0 - D). x_t is drawn in VE form, x = x0 + sigma_t eps = x_t / sqrt(abar_t).
L_0 is a probability of the discrete data, so the bound needs no Jacobian term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rediffuse.samplers.common import Denoiser, call
from rediffuse.core.schedules import VPLinear
from .bits import LEVELS, mean_and_stderr, to_levels

VARIANCES = ("posterior", "beta")
f64 = torch.float64


@dataclass(frozen=True)
class VLB:
    """Per-sample terms of the variational bound in bits/dim, their sum, and the NFE."""

    bits_per_dim: Tensor  # prior + diffusion + decoder
    prior: Tensor  # L_T
    diffusion: Tensor  # sum_{t=2}^T L_{t-1} (an unbiased estimate when subsampled)
    decoder: Tensor  # L_0
    nfe: int

    def summary(self) -> dict[str, float]:
        """Batch means (and the standard error of bits/dim) as floats."""
        return {**mean_and_stderr(self.bits_per_dim, "bits_per_dim"), "prior": float(self.prior.mean()),
                "diffusion": float(self.diffusion.mean()), "decoder": float(self.decoder.mean()),
                "nfe": float(self.nfe)}


def posterior_terms(schedule: VPLinear) -> dict[str, Tensor]:
    """float64 per-step abar, beta, the posterior variance beta~ and the x0 coefficient c0 of its mean."""
    abar = schedule.alphas_cumprod.to(f64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / abar_prev
    return {"abar": abar, "beta": beta, "beta_tilde": beta * (1 - abar_prev) / (1 - abar),
            "c0": abar_prev.sqrt() * beta / (1 - abar)}


def gaussian_kl(mean_diff_sq: Tensor, var_q: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(m_q, var_q) || N(m_p, var_p)) per element, given (m_q - m_p)^2."""
    return 0.5 * ((var_p / var_q).log() + (var_q + mean_diff_sq) / var_p - 1)


def log_normal_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stable in both tails."""
    flip = a + b > 0  # upper tail: use Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    gap = torch.special.log_ndtr(lo) - torch.special.log_ndtr(hi)  # <= 0
    log1mexp = torch.where(gap > -math.log(2), (-torch.expm1(gap)).log(), torch.log1p(-gap.exp()))
    return torch.special.log_ndtr(hi) + log1mexp


def discretized_gaussian_log_prob(levels: Tensor, mean: Tensor, std: float) -> Tensor:
    """log of N(mean, std^2) mass on each 8-bit value's bin in [-1, 1] (Ho et al. 2020, eq. 13), per element."""
    x = levels.to(f64) / 127.5 - 1
    half = 1 / 255
    a = torch.where(levels == 0, -math.inf, (x - half - mean) / std)
    b = torch.where(levels == LEVELS - 1, math.inf, (x + half - mean) / std)
    return log_normal_mass(a, b)


def _denoise(denoiser: Denoiser, x0: Tensor, sigma: Tensor, clip: bool, generator: torch.Generator | None,
             cond: Tensor | None, dtype: torch.dtype) -> Tensor:
    """D(x0 + sigma eps, sigma) in float64 for fresh noise eps, clipped to [-1, 1] if asked."""
    eps = torch.randn(x0.shape, generator=generator, dtype=f64, device=x0.device)
    x = (x0 + sigma.reshape(-1, *[1] * (x0.ndim - 1)) * eps).to(dtype)
    out = call(denoiser, x, sigma, cond).to(f64)
    return out.clamp(-1, 1) if clip else out


def _kl_term(x0: Tensor, denoised: Tensor, c0: Tensor, var_q: Tensor, var_p: Tensor) -> Tensor:
    """KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) per sample, given per-sample step coefficients."""
    shape = (-1, *[1] * (x0.ndim - 1))
    diff_sq = (c0.reshape(shape) * (x0 - denoised)).pow(2)
    return gaussian_kl(diff_sq, var_q.reshape(shape), var_p.reshape(shape)).reshape(x0.shape[0], -1).sum(1)


def kl_timesteps(batch: int, steps: int, count: int | None, generator: torch.Generator | None,
                 device: torch.device) -> Tensor:
    """[batch, count] indices in 1..steps-1 of the KL terms to evaluate: all, or a uniform subset per sample."""
    if count is None:
        return torch.arange(1, steps, device=device).expand(batch, steps - 1)
    if not 1 <= count <= steps - 1:
        raise ValueError(f"num_timesteps must lie in 1..{steps - 1}, got {count}")
    draws = torch.rand(batch, steps - 1, generator=generator, device=device)
    return draws.argsort(dim=1)[:, :count] + 1


def vlb_bits_per_dim(denoiser: Denoiser, schedule: VPLinear, x0: Tensor, *, num_timesteps: int | None = None,
                     variance: str = "beta", clip_denoised: bool = True,
                     generator: torch.Generator | None = None, cond: Tensor | None = None) -> VLB:
    """DDPM's variational bound on -log2 P(x0) / D for 8-bit data (uint8, or k/127.5 - 1), per sample.

    Each term is a one-draw estimate of its expectation over x_t (L_T is closed-form). The T - 1 KL terms are
    summed in full (num_timesteps=None: T - 1 denoiser calls) or estimated from num_timesteps of them drawn
    uniformly without replacement per sample, scaled by (T - 1) / num_timesteps: unbiased, but noisy, since
    the few terms at small t dominate. The model's variance is beta_t ('beta': Ho et al.'s CIFAR-10 setting,
    and the tighter bound when the data varies on the scale of sigma_1) or beta~_t ('posterior'); the decoder
    uses beta~_2 for both, as Ho et al.'s code does. clip_denoised clamps D to [-1, 1], as that code does
    (the result is a bound either way).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    levels = to_levels(x0)
    dtype = x0.dtype if x0.is_floating_point() else torch.float32
    x = levels.to(f64) / 127.5 - 1
    batch, dim, steps = x.shape[0], x[0].numel(), schedule.num_steps
    terms = {k: v.to(x.device) for k, v in posterior_terms(schedule).items()}
    sigmas = schedule.discrete_sigmas.to(device=x.device, dtype=f64)
    model_var = terms["beta_tilde"] if variance == "posterior" else terms["beta"]

    abar_end = terms["abar"][-1]
    prior = 0.5 * (abar_end * x.pow(2) - abar_end - (1 - abar_end).log()).reshape(batch, -1).sum(1)

    first = sigmas[:1].expand(batch)
    decoded = _denoise(denoiser, x, first, clip_denoised, generator, cond, dtype)
    std0 = float(terms["beta_tilde"][1].sqrt())
    decoder = -discretized_gaussian_log_prob(levels, decoded, std0).reshape(batch, -1).sum(1)

    index = kl_timesteps(batch, steps, num_timesteps, generator, x.device)
    diffusion = x.new_zeros(batch)
    for column in index.T:
        denoised = _denoise(denoiser, x, sigmas[column], clip_denoised, generator, cond, dtype)
        diffusion = diffusion + _kl_term(x, denoised, terms["c0"][column], terms["beta_tilde"][column],
                                         model_var[column])
    diffusion = diffusion * ((steps - 1) / index.shape[1])

    to_bits = 1 / (dim * math.log(2))
    total = prior + diffusion + decoder
    return VLB(total * to_bits, prior * to_bits, diffusion * to_bits, decoder * to_bits, index.shape[1] + 1)
