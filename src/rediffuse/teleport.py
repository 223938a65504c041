"""Analytical teleportation: the high-noise part of the probability-flow ODE solved in closed form.

For data N(m, C) the VE probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma, with
D = m + C (C + sigma^2 I)^-1 (x - m), has the exact solution
x(s') = m + (C + s'^2 I)^(1/2) (C + s^2 I)^(-1/2) (x(s) - m): each eigen-direction of C with variance v scales
by sqrt((v + s'^2) / (v + s^2)). At high noise the noised data is nearly Gaussian, so this jump can replace a
sampler's first steps at no network cost (Wang & Vastola 2024, "The unreasonable effectiveness of Gaussian
score approximation for diffusion models and its applications", TMLR). The Gaussian is fitted to samples
(training data, or the model's own samples); where the samples span fewer directions than the data has, the
remaining directions share one variance, the mean of what the kept ones leave. The same Gaussian's D along
its own flow above the landing can stand in for the model's, to start a multistep sampler with a full history
(`samplers.sample(..., warm_start=True)`). Without that history, a multistep sampler's first network step can
still solve the Gaussian's part of the model exactly (`GaussianFlow.exp_euler`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

f64 = torch.float64


@dataclass(frozen=True)
class GaussianFlow:
    """The closed-form probability-flow map of N(mean, V diag(evals) V^T + rest (I - V V^T))."""

    mean: Tensor  # [d]
    evecs: Tensor  # [d, k], orthonormal columns
    evals: Tensor  # [k]
    rest: float  # variance of every direction orthogonal to evecs

    @classmethod
    def fit(cls, samples: Tensor, rank: int | None = None) -> "GaussianFlow":
        """The Gaussian fit (sample mean and covariance) of samples [n, ...], keeping at most `rank` directions."""
        x = samples.reshape(samples.shape[0], -1).to(device="cpu", dtype=f64)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"fitting a Gaussian needs at least 2 samples, got {n}")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        evals = s**2 / (n - 1)
        k = min(len(evals), d if rank is None else rank)
        total = float(evals.sum())
        kept = evals[:k]
        rest = (total - float(kept.sum())) / (d - k) if d > k else 0.0
        return cls(mean, vh[:k].T.contiguous(), kept, max(rest, 0.0))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def flow(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """x (VE form, noise level sigma_from) carried along the Gaussian's ODE to sigma_to."""
        return self._shrink(x, lambda v: ((v + sigma_to**2) / (v + sigma_from**2)) ** 0.5)

    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        """The Gaussian's exact denoiser E[x0 | x] = m + C (C + sigma^2 I)^-1 (x - m) at noise level sigma."""
        return self._shrink(x, lambda v: v / (v + sigma**2))

    def exp_euler(self, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
        """One step of the model's ODE from sigma to sigma_next > 0 with this Gaussian's part solved exactly.

        The model's D(x, sigma) = `denoised` is split into the Gaussian's D, linear in x, and the rest, held
        constant over the step: x' = flow(x) + W(C) (D - D_Gauss(x)) with, per direction of variance v,
        W = sqrt(v + s'^2) (asinh(sqrt(v) / s') - asinh(sqrt(v) / s)) / sqrt(v), the integral of the flow's
        factor times ds / s (an exponential Euler step with the Gaussian's linear part; Hochbruck & Ostermann
        2010, "Exponential integrators"). Exact when the data are this Gaussian; DDIM's step when C = 0.
        """
        if not sigma > sigma_next > 0:
            raise ValueError(f"exp_euler steps down to a positive level; got {sigma} -> {sigma_next}")

        def weight(v: Tensor | float) -> Tensor:
            a = torch.as_tensor(v, dtype=f64).clamp(min=0).sqrt()
            safe = a.clamp(min=1e-300)
            exact = (a**2 + sigma_next**2).sqrt() * (torch.asinh(safe / sigma_next) - torch.asinh(safe / sigma)) / safe
            return torch.where(a > 0, exact, torch.full_like(a, 1 - sigma_next / sigma))

        rest = denoised - self.denoise(x, sigma)
        return self.flow(x, sigma, sigma_next) + self._scale(rest, weight)

    def _shrink(self, x: Tensor, factor: Callable[[Tensor | float], Tensor | float]) -> Tensor:
        """m + f(C) (x - m): each eigen-direction of variance v scaled by factor(v)."""
        return self._scale(x, factor, centre=True)

    def _scale(self, x: Tensor, factor: Callable[[Tensor | float], Tensor | float], centre: bool = False) -> Tensor:
        """f(C) x, or m + f(C) (x - m) with `centre`: each eigen-direction of variance v scaled by factor(v)."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"the Gaussian has {self.dim} features, x has {flat.shape[1]} per sample")
        u = flat.to(dtype=f64, device=self.mean.device)
        if centre:
            u = u - self.mean
        rest = factor(self.rest)  # every direction scales by it, the kept ones by their own factor instead
        out = rest * u + ((u @ self.evecs) * (factor(self.evals) - rest)) @ self.evecs.T
        if centre:
            out = out + self.mean
        return out.reshape(x.shape).to(dtype=x.dtype, device=x.device)

    def history(self, x: Tensor, sigma: float, levels: Sequence[float]) -> list[tuple[float, Tensor, Tensor]]:
        """(level, x carried there from sigma, the Gaussian's D there) for each level, in the order given."""
        out = []
        for level in levels:
            x_level = self.flow(x, sigma, level)
            out.append((level, x_level, self.denoise(x_level, level)))
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fit as safetensors (atomically)."""
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        save_file({"mean": self.mean.contiguous(), "evecs": self.evecs.contiguous(), "evals": self.evals.contiguous(),
                   "rest": torch.tensor([self.rest], dtype=f64)}, str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GaussianFlow":
        """Read a fit written by `save`."""
        t = load_file(str(path))
        return cls(t["mean"], t["evecs"], t["evals"], float(t["rest"][0]))


def teleported(x: Tensor, sigmas: Tensor, flow: GaussianFlow) -> tuple[Tensor, Tensor]:
    """(x carried from sigmas[0] to sigmas[1] by the Gaussian flow, the grid from sigmas[1] on)."""
    if len(sigmas) < 3:
        raise ValueError("a teleported grid needs sigma_max, the landing level and at least one more level")
    return flow.flow(x, float(sigmas[0]), float(sigmas[1])), sigmas[1:]
