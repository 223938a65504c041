"""Kernel Inception Distance: unbiased polynomial-kernel MMD^2 averaged over random subsets."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import ArrayLike, as_feature_pair, make_generator
from .mmd import unbiased_mmd2


def polynomial_kernel(a: Tensor, b: Tensor) -> Tensor:
    """Kernel k(a, b) = (a . b / D + 1)^3, D the feature dimension."""
    return (a @ b.mT / a.shape[1] + 1) ** 3


def kernel_inception_distance(
    x: ArrayLike,
    y: ArrayLike,
    subset_size: int = 1000,
    num_subsets: int = 100,
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """(mean, std) of KID between feature sets `x` [N, D] and `y` [M, D].

    Binkowski et al. 2018, "Demystifying MMD GANs": the unbiased MMD^2 with kernel (a . b / D + 1)^3 on
    `num_subsets` pairs of subsets, each drawn without replacement, of min(subset_size, N, M) rows.
    std is the population standard deviation over the subsets (as torch-fidelity and clean-fid report it).
    Deterministic given `seed` (or the state of `generator`, which takes precedence).
    """
    a, b = as_feature_pair(x, y)
    size = min(subset_size, a.shape[0], b.shape[0])
    g = make_generator(seed, generator)
    values = []
    for _ in range(num_subsets):
        ia = torch.randperm(a.shape[0], generator=g, device=g.device)[:size].to(a.device)
        ib = torch.randperm(b.shape[0], generator=g, device=g.device)[:size].to(a.device)
        values.append(unbiased_mmd2(a[ia], b[ib], polynomial_kernel, chunk_size=size))
    result = torch.tensor(values, dtype=torch.float64)
    return float(result.mean()), float(result.std(correction=0))
