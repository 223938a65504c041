"""Closed-form posteriors of a Gaussian mixture, the truth that editing methods are measured against.

For p = sum_i pi_i N(mu_i, S_i) and the coordinates split into known k and missing m, the posterior of the missing
part is again a mixture (Bishop 2006, section 2.3.1): weights proportional to pi_i N(x_k; mu_i,k, S_i,kk), means
mu_i,m + S_i,mk S_i,kk^-1 (x_k - mu_i,k), covariances S_i,mm - S_i,mk S_i,kk^-1 S_i,km. The posterior of the
clean data given a noisy x = x0 + sigma eps (what SDEdit samples) is the same formula with the noisy copy as the
known part: weights proportional to pi_i N(x; mu_i, S_i + sigma^2 I), means mu_i + S_i (S_i + sigma^2 I)^-1
(x - mu_i), covariances S_i - S_i (S_i + sigma^2 I)^-1 S_i. All arithmetic is float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rediffuse.truth.analytic import GaussianMixture

f64 = torch.float64


@dataclass(frozen=True)
class MixturePosterior:
    """Per-sample mixtures over some coordinates: weights [N, K], means [N, K, m], covariances [K, m, m]."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    def sample(self, per: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """`per` exact draws for each of the N samples: [N, per, m]."""
        n, k, m = self.means.shape
        comp = torch.multinomial(self.weights, per, replacement=True, generator=generator)  # [N, per]
        chol = torch.linalg.cholesky(self.covs)  # [K, m, m]
        z = torch.randn(n, per, m, generator=generator, dtype=f64)
        return torch.gather(self.means, 1, comp[..., None].expand(n, per, m)) + \
            torch.einsum("npij,npj->npi", chol[comp], z)


def _gaussian_log_pdf(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """log N(x; mean, cov) for x [N, d], means [K, d] or [N, K, d], covs [K, d, d]: [N, K]."""
    diff = x[:, None, :] - mean  # [N, K, d]
    chol = torch.linalg.cholesky(cov)  # [K, d, d]
    solved = torch.linalg.solve_triangular(chol[:, None], diff.transpose(0, 1)[..., None], upper=False)[..., 0]
    log_det = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # [K]
    return (-0.5 * (solved.square().sum(-1) + log_det[:, None] + x.shape[1] * math.log(2 * math.pi))).T


def conditional(mixture: GaussianMixture, x: Tensor, missing: Tensor) -> MixturePosterior:
    """p(x_m | x_k) of each sample of x [N, d] (its missing coordinates are ignored); `missing` [d] is True where
    a coordinate is missing."""
    x = x.to(f64).reshape(len(x), -1)
    m, k = missing.bool(), ~missing.bool()
    if not bool(m.any()) or not bool(k.any()):
        raise ValueError("a conditional needs at least one missing and one known coordinate")
    mu, s = mixture.means, mixture.covs
    s_kk, s_mk, s_mm = s[:, k][:, :, k], s[:, m][:, :, k], s[:, m][:, :, m]
    gain = torch.linalg.solve(s_kk, s_mk.transpose(1, 2)).transpose(1, 2)  # S_mk S_kk^-1: [K, m, k]
    logits = mixture.weights.log() + _gaussian_log_pdf(x[:, k], mu[:, k], s_kk)
    means = mu[:, m] + torch.einsum("jab,njb->nja", gain, x[:, None, k] - mu[:, k])
    covs = s_mm - gain @ s_mk.transpose(1, 2)
    return MixturePosterior(torch.softmax(logits, 1), means, (covs + covs.transpose(1, 2)) / 2)


def denoised(mixture: GaussianMixture, x: Tensor, sigma: float) -> MixturePosterior:
    """p(x0 | x0 + sigma eps = x) of each sample of x [N, d]."""
    x = x.to(f64).reshape(len(x), -1)
    eye = torch.eye(mixture.dim, dtype=f64)
    noisy = mixture.covs + sigma**2 * eye
    gain = torch.linalg.solve(noisy, mixture.covs).transpose(1, 2)  # S (S + sigma^2 I)^-1 (symmetric S)
    logits = mixture.weights.log() + _gaussian_log_pdf(x, mixture.means, noisy)
    means = mixture.means + torch.einsum("jab,njb->nja", gain, x[:, None, :] - mixture.means)
    covs = mixture.covs - gain @ mixture.covs
    return MixturePosterior(torch.softmax(logits, 1), means, (covs + covs.transpose(1, 2)) / 2)
