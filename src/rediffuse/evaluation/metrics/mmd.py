"""Unbiased maximum mean discrepancy (MMD^2) for any kernel, and with a sum of RBF kernels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._common import ArrayLike, as_feature_pair, row_chunks, squared_distances

Kernel = Callable[[Tensor, Tensor], Tensor]

#: Multipliers of the median pairwise distance used as default RBF bandwidths.
DEFAULT_BANDWIDTH_MULTIPLIERS: tuple[float, ...] = (0.5, 1.0, 2.0)


def _kernel_sum(a: Tensor, b: Tensor, kernel: Kernel, chunk_size: int, skip_diagonal: bool) -> Tensor:
    """Sum of kernel(a_i, b_j) over all pairs, leaving out i == j when `skip_diagonal` (a is b)."""
    total = a.new_zeros(())
    for start, rows in row_chunks(a, chunk_size):
        block = kernel(rows, b)
        total = total + block.sum()
        if skip_diagonal:
            total = total - block[:, start : start + rows.shape[0]].diagonal().sum()
    return total


def unbiased_mmd2(x: ArrayLike, y: ArrayLike, kernel: Kernel, *, chunk_size: int = 1024) -> float:
    """Unbiased estimate of MMD^2 between the laws of `x` [N, D] and `y` [M, D] (Gretton et al. 2012, JMLR, eq. 3).

    MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j), with
    `kernel(a [n, D], b [m, D]) -> [n, m]` evaluated in row chunks. Its mean is 0 when both laws agree,
    so it can be slightly negative.
    """
    a, b = as_feature_pair(x, y)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 samples per set, got {n} and {m}")
    kxx = _kernel_sum(a, a, kernel, chunk_size, skip_diagonal=True) / (n * (n - 1))
    kyy = _kernel_sum(b, b, kernel, chunk_size, skip_diagonal=True) / (m * (m - 1))
    kxy = _kernel_sum(a, b, kernel, chunk_size, skip_diagonal=False) / (n * m)
    return float(kxx + kyy - 2 * kxy)


def rbf_kernel(bandwidths: Sequence[float]) -> Kernel:
    """Kernel k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)) over the bandwidths h."""
    scales = [0.5 / float(h) ** 2 for h in bandwidths]
    if not scales:
        raise ValueError("need at least one bandwidth")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        squared = squared_distances(a, b)
        total = torch.zeros_like(squared)
        for s in scales:
            total += squared.mul(-s).exp_()
        return total

    return kernel


def median_distance(x: ArrayLike, y: ArrayLike, max_points: int = 1000) -> float:
    """Median Euclidean distance between distinct points of the pooled sample (at most `max_points`, evenly strided)."""
    a, b = as_feature_pair(x, y)
    pooled = torch.cat([a, b])
    points = pooled[:: -(-pooled.shape[0] // max_points)]
    i, j = torch.triu_indices(points.shape[0], points.shape[0], offset=1, device=points.device)
    return float(squared_distances(points, points)[i, j].median().sqrt())


def mmd_rbf(
    x: ArrayLike,
    y: ArrayLike,
    bandwidths: Sequence[float] | None = None,
    *,
    chunk_size: int = 1024,
) -> float:
    """Unbiased MMD^2 with a sum of Gaussian (RBF) kernels (Gretton et al. 2012, "A Kernel Two-Sample Test").

    Default bandwidths: the median heuristic (Gretton et al. 2012, sec. 8) h0 = median pairwise distance of
    the pooled sample, times DEFAULT_BANDWIDTH_MULTIPLIERS = (0.5, 1, 2). One bandwidth at the data's own
    scale plus one each side keeps the test sensitive to both local and global differences while staying
    invariant to a common rescaling of x and y. If all points coincide (h0 = 0), h0 = 1 is used.
    """
    if bandwidths is None:
        h0 = median_distance(x, y) or 1.0
        bandwidths = [h0 * c for c in DEFAULT_BANDWIDTH_MULTIPLIERS]
    return unbiased_mmd2(x, y, rbf_kernel(bandwidths), chunk_size=chunk_size)
