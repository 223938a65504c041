"""Consistency models tuned from a denoiser: the function, Easy Consistency Tuning's loss, and few-step grids.

A consistency function f(x, sigma) maps any point of a probability-flow ODE trajectory to its end at sigma_min
(Song et al. 2023, "Consistency Models"), with the boundary condition f(x, sigma_min) = x. Here it is built
from a denoiser D (any parameterisation) as the Euler (DDIM) step of the ODE from sigma to sigma_min:

    f(x, sigma) = (sigma_min / sigma) x + (1 - sigma_min / sigma) D(x, sigma),

so the boundary holds exactly for any weights (the weight of D is 0 at sigma_min), and a denoiser trained for
diffusion is already the consistency function's first guess: Easy Consistency Tuning (ECT, Geng et al. 2024,
"Consistency Models Made Easy") starts from the diffusion model's weights.

ECT's training pair, for data x0, shared noise eps and levels t > r drawn as below:

    x_t = x0 + t eps,  x_r = x0 + r eps,  loss = d(f(x_t, t), stopgrad f(x_r, r)) / (t - r),
    d(a, b) = sqrt(|a - b|^2 + c^2) - c   (the pseudo-Huber distance, Song & Dhariwal 2023, "iCT"),

with ln t ~ N(P_mean, P_std^2) (ECT: -1.1, 2.0) and the shrinking gap r = t (1 - q^-(s+1) (1 + k sigmoid(-b t)))
(ECT: q = 2, k = 8, b = 1), clipped at sigma_min, whose stage s grows during tuning: at s = 0 most small t map
to r = sigma_min, where f(x_r, r) = x_r ~ x0 (plain denoising); later stages tighten the pair towards the
consistency condition. ECT's constants assume data of standard deviation 0.5; levels here are measured in units
of sigma_data / 0.5 (so P_mean moves by ln(sigma_data / 0.5) and sigmoid's argument is scaled), and iCT's
c = 0.00054 sqrt(d) is scaled likewise.

Sampling (Song et al. 2023, Algorithm 1): x0 = f(x, sigma_max); for each further level tau: x = x0 +
sqrt(tau^2 - sigma_min^2) z, x0 = f(x, tau). Two steps use the middle level 0.821 (iCT, ECT; in data units).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse.core.denoisers import Denoiser, expand_as, sigma_batch
from rediffuse.core.schedules import Schedule, karras_sigmas

ECT_P_MEAN, ECT_P_STD = -1.1, 2.0  # ECT's level distribution (CIFAR-10, Appendix G.2)
ECT_Q, ECT_K, ECT_B = 2.0, 8.0, 1.0  # ECT's gap schedule
ICT_HUBER = 0.00054  # iCT's pseudo-Huber constant per sqrt(dimension)
MID_SIGMA = 0.821  # iCT/ECT's middle level of two-step sampling
UNIT = 0.5  # the data standard deviation ECT's constants assume


class ConsistencyFunction(Denoiser):
    """f(x, sigma, cond) = (sigma_min/sigma) x + (1 - sigma_min/sigma) D(x, sigma, cond): f(x, sigma_min) = x."""

    def __init__(self, net: nn.Module, parameterization: str, schedule: Schedule, sigma_data: float,
                 sigma_min: float, mid_sigma: float, method: str = "ect") -> None:
        super().__init__(net, parameterization, schedule, sigma_data)
        self.sigma_min, self.mid_sigma, self.method = float(sigma_min), float(mid_sigma), method

    def pretrained_spec(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The denoiser's pretrained spec plus the consistency levels (sampled with the consistency sampler)."""
        return {**super().pretrained_spec(data),
                "consistency": {"method": self.method, "sigma_min": self.sigma_min, "mid_sigma": self.mid_sigma}}

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        denoised = super().forward(x, sigma, cond)
        if not isinstance(sigma, Tensor):
            keep = self.sigma_min / float(sigma)
            return x * keep + denoised * (1 - keep)
        keep = expand_as(self.sigma_min / sigma_batch(sigma, x), x)
        return x * keep + denoised * (1 - keep)


def unit(sigma_data: float) -> float:
    """The factor from ECT's units (data std 0.5) to this data's: sigma_data / 0.5."""
    return sigma_data / UNIT


def sample_levels(n: int, sigma_data: float, sigma_min: float, sigma_max: float, p_mean: float = ECT_P_MEAN,
                  p_std: float = ECT_P_STD, generator: torch.Generator | None = None) -> Tensor:
    """n levels t (float64) with ln(t / unit) ~ N(p_mean, p_std^2), clipped to [2 sigma_min, sigma_max]."""
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    t = (z * p_std + p_mean).exp() * unit(sigma_data)
    return t.clamp(2 * sigma_min, sigma_max)


def gap_level(t: Tensor, stage: int, sigma_data: float, sigma_min: float, q: float = ECT_Q, k: float = ECT_K,
              b: float = ECT_B) -> Tensor:
    """ECT's r(t) = t (1 - q^-(stage+1) (1 + k sigmoid(-b t / unit))), clipped to [sigma_min, t)."""
    ratio = 1 - q ** -(stage + 1) * (1 + k * torch.sigmoid(-b * t / unit(sigma_data)))
    return (t * ratio).clamp(min=sigma_min)


def huber_constant(dim: int, sigma_data: float) -> float:
    """iCT's pseudo-Huber c = 0.00054 sqrt(d), in this data's units."""
    return ICT_HUBER * math.sqrt(dim) * unit(sigma_data)


def _forked(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The global RNG states that dropout layers draw from (CPU, and the device's on CUDA)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _restore(states: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def euler_step(teacher: nn.Module, x: Tensor, t: Tensor, r: Tensor, cond: Tensor | None = None) -> Tensor:
    """x moved from level t to r by one Euler step of the teacher's probability-flow ODE,
    dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 1 with sigma(t) = t)."""
    with torch.no_grad():
        denoised = teacher(x, t) if cond is None else teacher(x, t, cond)
    return x + expand_as((r - t) / t, x) * (x - denoised)


def consistency_loss(f: nn.Module, x0: Tensor, t: Tensor, r: Tensor, noise: Tensor, huber_c: float,
                     cond: Tensor | None = None, teacher: nn.Module | None = None) -> Tensor:
    """ECT's per-sample loss d(f(x_t, t), stopgrad f(x_r, r)) / (t - r) at x_t = x0 + t eps, with shared
    dropout masks (both calls of f start from the same RNG state). x_r is x0 + r eps (ECT: shared noise), or
    with a teacher denoiser (consistency distillation, Song et al. 2023, Algorithm 2) the Euler step of the
    teacher's ODE from x_t to r."""
    args = () if cond is None else (cond,)
    x_t = x0 + expand_as(t, x0) * noise
    x_r = x0 + expand_as(r, x0) * noise if teacher is None else euler_step(teacher, x_t, t, r, cond)
    states = _forked(x0.device)
    with torch.no_grad():
        target = f(x_r, r, *args)
    _restore(states, x0.device)
    online = f(x_t, t, *args)
    squared = (online.float() - target.float()).pow(2).flatten(1).sum(1)
    distance = (squared + huber_c**2).sqrt() - huber_c
    return distance / (t - r).to(distance.dtype)


def sampling_sigmas(sigma_max: float, mid_sigma: float, steps: int, rho: float = 7.0) -> Tensor:
    """The few-step grid plus a trailing 0: [sigma_max] for 1 step, [sigma_max, mid] for 2, and for more steps
    `steps` Karras levels (rho=7) from sigma_max down to mid."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    levels = karras_sigmas(steps, mid_sigma, sigma_max, rho).to(torch.float64)
    levels[0], levels[-1] = sigma_max, mid_sigma  # exactly, not through the rho-th powers
    return torch.cat([levels, levels.new_zeros(1)])
