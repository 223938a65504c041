"""Gaussian mixtures with exact noised densities and exact denoisers: ground truth for every test.

For p = sum_k w_k N(mu_k, S_k), the VE-noised density is p_sigma = sum_k w_k N(mu_k, S_k + sigma^2 I), and
D(x, sigma) = E[x0 | x] = sum_k gamma_k(x) (mu_k + S_k (S_k + sigma^2 I)^-1 (x - mu_k)), with gamma_k the
posterior responsibilities. All arithmetic is float64 through the eigendecomposition S_k = U_k L_k U_k^T.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from rediffuse.core.denoisers import sigma_batch

f64 = torch.float64


class GaussianMixture:
    """A mixture sum_k w_k N(mu_k, S_k) in d dimensions (weights [K], means [K, d], covs [K, d, d])."""

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        weights, means, covs = (torch.as_tensor(v, dtype=f64) for v in (weights, means, covs))
        if means.ndim != 2 or covs.shape != (*means.shape, means.shape[1]) or weights.shape != means.shape[:1]:
            raise ValueError("expected weights [K], means [K, d] and covs [K, d, d]")
        self.weights = weights / weights.sum()
        self.means = means
        self.covs = (covs + covs.transpose(1, 2)) / 2
        self.evals, self.evecs = torch.linalg.eigh(self.covs)
        if (self.evals <= 0).any():
            raise ValueError("covariances must be positive definite")
        k, d = means.shape
        self._basis = self.evecs.permute(1, 0, 2).reshape(d, k * d)  # [d, K*d]: all eigenbases side by side
        self._mean_coords = torch.einsum("kd,kde->ke", self.means, self.evecs).reshape(k * d)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _terms(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-component (log w_k N(x; mu_k, S_k + sigma^2 I), eigen-coordinates of x - mu_k, variances)."""
        proj = (x @ self._basis - self._mean_coords).reshape(x.shape[0], *self.means.shape)
        if sigma.numel() > 1 and bool((sigma == sigma[0]).all()):
            sigma = sigma[:1]  # one noise level for the batch: per-component terms computed once
        var = self.evals + sigma.reshape(-1, 1, 1) ** 2
        inv = var.reciprocal()
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + var.log().sum(-1) + (proj.square() * inv).sum(-1))
        return self.weights.log() + log_norm, proj, var

    def _flat(self, x: Tensor, sigma: float | Tensor) -> tuple[Tensor, Tensor]:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} features per sample, got {x.shape[1]}")
        return x.to(f64).cpu(), sigma_batch(sigma, x).cpu()

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """log p_sigma(x) of the noised mixture, per sample (float64)."""
        x64, sig = self._flat(x, sigma)
        log_joint, _, _ = self._terms(x64, sig)
        return torch.logsumexp(log_joint, dim=1).to(x.device)

    def component(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """Index of each sample's most probable mixture component at noise level sigma."""
        x64, sig = self._flat(x, sigma)
        return self._terms(x64, sig)[0].argmax(1).to(x.device)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """The exact E[x0 | x] at noise level sigma, in x's shape, dtype and device."""
        x64, sig = self._flat(x, sigma)
        log_joint, proj, var = self._terms(x64, sig)
        gamma = (log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)).exp()
        shrunk = (gamma[:, :, None] * proj * (self.evals / var)).reshape(x64.shape[0], -1)
        out = gamma @ self.means + shrunk @ self._basis.T
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def denoiser(self) -> "MixtureDenoiser":
        """This mixture's exact denoiser as a module D(x, sigma, cond=None)."""
        return MixtureDenoiser(self)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact samples (float64, [n, d])."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=f64)
        coords = z * self.evals[comp].sqrt()
        return self.means[comp] + torch.einsum("nde,ne->nd", self.evecs[comp], coords)

    def mean(self) -> Tensor:
        """The mixture mean."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """The mixture covariance."""
        centred = self.means - self.mean()
        return torch.einsum("k,kde->de", self.weights, self.covs + centred[:, :, None] * centred[:, None, :])


class MixtureDenoiser(nn.Module):
    """The exact denoiser of a GaussianMixture as a module (ignores cond)."""

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        return self.mixture.denoise(x, sigma)


def isotropic(means: Tensor, std: float, weights: Tensor | None = None) -> GaussianMixture:
    """A mixture of equal-covariance isotropic Gaussians at the given means."""
    means = torch.as_tensor(means, dtype=f64)
    k, d = means.shape
    weights = torch.ones(k, dtype=f64) if weights is None else weights
    return GaussianMixture(weights, means, (std**2) * torch.eye(d, dtype=f64).expand(k, d, d))


def ring(k: int = 8, radius: float = 4.0, std: float = 0.25) -> GaussianMixture:
    """k isotropic Gaussians evenly spaced on a circle."""
    angle = torch.arange(k, dtype=f64) * 2 * math.pi / k
    return isotropic(radius * torch.stack([angle.cos(), angle.sin()], 1), std)


def moons(per_moon: int = 32, std: float = 0.08) -> GaussianMixture:
    """Two interleaving half circles (like scikit-learn's make_moons), centred."""
    a = torch.linspace(0, math.pi, per_moon, dtype=f64)
    upper = torch.stack([a.cos(), a.sin()], 1)
    lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
    return isotropic(torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=f64), std)


def swissroll(k: int = 96, std: float = 0.1) -> GaussianMixture:
    """A 2-D swiss roll: Gaussians along (t cos t, t sin t) / 5 for t in [1.5 pi, 4.5 pi]."""
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, k, dtype=f64)
    return isotropic(torch.stack([t * t.cos(), t * t.sin()], 1) / 5, std)


def spirals(per_arm: int = 48, std: float = 0.08) -> GaussianMixture:
    """Two interleaved spirals."""
    theta = torch.linspace(0.5 * math.pi, 3 * math.pi, per_arm, dtype=f64)
    arm = torch.stack([theta * theta.cos(), theta * theta.sin()], 1) / (1.5 * math.pi)
    return isotropic(torch.cat([arm, -arm]), std)


def checkerboard(std: float = 0.2) -> GaussianMixture:
    """A 4x4 checkerboard on [-2, 2]^2: each filled square holds a 2x2 grid of Gaussians."""
    centres = [(i - 1.5, j - 1.5) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    offsets = [(dx, dy) for dx in (-0.25, 0.25) for dy in (-0.25, 0.25)]
    means = [(cx + dx, cy + dy) for cx, cy in centres for dx, dy in offsets]
    return isotropic(torch.tensor(means, dtype=f64), std)


def random_mixture(dim: int, k: int, rank: int | None = None, floor: float = 0.01, mean_scale: float = 1.0,
                   seed: int = 0) -> GaussianMixture:
    """A seeded random mixture: means N(0, mean_scale^2 I), covariances A A^T / rank + floor I (A: [d, rank])."""
    g = torch.Generator().manual_seed(seed)
    rank = dim if rank is None else rank
    means = mean_scale * torch.randn(k, dim, generator=g, dtype=f64)
    a = torch.randn(k, dim, rank, generator=g, dtype=f64) / math.sqrt(rank)
    covs = a @ a.transpose(1, 2) + floor * torch.eye(dim, dtype=f64)
    weights = 0.5 + torch.rand(k, generator=g, dtype=f64)
    return GaussianMixture(weights, means, covs)


PRESETS: dict[str, Callable[[], GaussianMixture]] = {
    "8gaussians": lambda: ring(8, radius=2.0, std=0.2),
    "ring8": lambda: ring(8, radius=4.0, std=0.25),
    "moons": moons,
    "swissroll": swissroll,
    "spirals": spirals,
    "checkerboard": checkerboard,
    "mix16d": lambda: random_mixture(16, 5, floor=0.05, mean_scale=1.0, seed=16),
    "mix64d": lambda: random_mixture(64, 10, rank=6, floor=0.01, mean_scale=1.0, seed=64),
}


def preset(name: str) -> GaussianMixture:
    """A named built-in mixture: 8gaussians, ring8, moons, swissroll, spirals, checkerboard, mix16d, mix64d."""
    if name not in PRESETS:
        raise ValueError(f"unknown mixture {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
