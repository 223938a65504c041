"""Sliced Wasserstein distance: 1-D optimal transport along random directions."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import ArrayLike, as_feature_pair, make_generator


def wasserstein_1d_pp(xs: Tensor, ys: Tensor, p: float) -> Tensor:
    """W_p^p between the empirical laws of each column of sorted `xs` [N, K] and sorted `ys` [M, K] -> [K].

    Exact: integrates |F^-1(u) - G^-1(u)|^p over u in (0, 1], both quantile functions being piecewise
    constant with steps at i/N and j/M; for N == M this is mean |xs - ys|^p.
    """
    n, m = xs.shape[0], ys.shape[0]
    if n == m:
        return (xs - ys).abs().pow(p).mean(dim=0)
    opts = {"dtype": xs.dtype, "device": xs.device}
    levels = torch.cat([torch.arange(1, n + 1, **opts) / n, torch.arange(1, m + 1, **opts) / m]).sort().values
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middles = levels - widths / 2
    ix = (middles * n).long().clamp(max=n - 1)
    iy = (middles * m).long().clamp(max=m - 1)
    return (widths[:, None] * (xs[ix] - ys[iy]).abs().pow(p)).sum(dim=0)


def sliced_wasserstein(
    x: ArrayLike,
    y: ArrayLike,
    num_projections: int = 256,
    *,
    p: float = 2,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced p-Wasserstein distance between samples `x` [N, D] and `y` [M, D].

    SW_p = (E_theta W_p^p(<theta, X>, <theta, Y>))^(1/p), theta uniform on the unit sphere (Rabin et al. 2011,
    "Wasserstein Barycenter and its Application to Texture Mixing"; Bonneel et al. 2015), estimated with
    `num_projections` directions. Each 1-D distance is exact between the empirical laws, also for N != M
    (see wasserstein_1d_pp). Deterministic given `seed` (or the state of `generator`, which takes precedence).
    """
    a, b = as_feature_pair(x, y)
    g = make_generator(seed, generator)
    theta = torch.randn(a.shape[1], num_projections, generator=g, device=g.device, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(a.device)
    xs = (a @ theta).sort(dim=0).values
    ys = (b @ theta).sort(dim=0).values
    return float(wasserstein_1d_pp(xs, ys, p).mean() ** (1 / p))
