"""Frechet distance between Gaussians fitted to two feature sets (FID when the features are Inception's)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import ArrayLike, as_features


def feature_stats(x: ArrayLike) -> tuple[Tensor, Tensor]:
    """Mean [D] and unbiased covariance [D, D] (float64) of the rows of `x` [N, D], N >= 2."""
    f = as_features(x)
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {n}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.mT @ centred / (n - 1)


def _psd_eigenvalues(w: Tensor) -> Tensor:
    """Eigenvalues of a symmetric PSD matrix with round-off (below D * eps * max|w|, or negative) set to 0."""
    tol = w.abs().max() * w.shape[-1] * torch.finfo(w.dtype).eps
    return torch.where(w > tol, w, torch.zeros_like(w))


def _psd_sqrt(c: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix."""
    w, v = torch.linalg.eigh(c)
    return (v * _psd_eigenvalues(w).sqrt()) @ v.mT


def _trace_sqrt_product(c1: Tensor, c2: Tensor) -> Tensor:
    """tr sqrt(C1 C2) for PSD C1, C2, as the sum of sqrt-eigenvalues of sqrt(C1) C2 sqrt(C1)."""
    s1 = _psd_sqrt(c1)
    m = s1 @ c2 @ s1
    return _psd_eigenvalues(torch.linalg.eigvalsh((m + m.mT) / 2)).sqrt().sum()


def frechet_from_stats(mu1: ArrayLike, cov1: ArrayLike, mu2: ArrayLike, cov2: ArrayLike) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2).

    d^2 = |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr sqrt(C1 C2)   (Dowson & Landau 1982; FID: Heusel et al.
    2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium").
    tr sqrt(C1 C2) is taken from the eigenvalues of the symmetric PSD matrix sqrt(C1) C2 sqrt(C1), which
    share the spectrum of C1 C2, so singular covariances (N < D) give a finite real value; eigenvalues
    below D * eps * max (round-off) count as 0, which keeps singular cases accurate to round-off. In float64;
    a result below zero (round-off) is clamped to 0.
    """
    m1 = as_features(mu1).reshape(-1)
    m2 = as_features(mu2, device=m1.device).reshape(-1)
    c1 = as_features(cov1, device=m1.device)
    c2 = as_features(cov2, device=m1.device)
    dim = m1.shape[0]
    if m2.shape[0] != dim or c1.shape != (dim, dim) or c2.shape != (dim, dim):
        raise ValueError(
            f"shape mismatch: mu1 {tuple(m1.shape)}, cov1 {tuple(c1.shape)}, "
            f"mu2 {tuple(m2.shape)}, cov2 {tuple(c2.shape)}"
        )
    distance = (m1 - m2).square().sum() + c1.trace() + c2.trace() - 2 * _trace_sqrt_product(c1, c2)
    return max(float(distance), 0.0)


def frechet_distance(x: ArrayLike, y: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to feature sets `x` [N, D] and `y` [M, D] (see frechet_from_stats)."""
    return frechet_from_stats(*feature_stats(x), *feature_stats(y))
