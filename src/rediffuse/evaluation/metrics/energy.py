"""Energy distance between two samples."""

from __future__ import annotations

from torch import Tensor

from ._common import ArrayLike, squared_distances
from .mmd import unbiased_mmd2


def _negative_distance(a: Tensor, b: Tensor) -> Tensor:
    """Kernel -|a - b| (the distance-induced kernel whose MMD^2 is the energy distance)."""
    return -squared_distances(a, b).sqrt_()


def energy_distance(x: ArrayLike, y: ArrayLike, *, chunk_size: int = 1024) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples `x` [N, D] and `y` [M, D].

    Szekely & Rizzo 2013, "Energy statistics: A class of statistics based on distances". The squared form
    (not its square root, unlike scipy.stats.energy_distance), with unbiased within-sample means over pairs
    i != j, so its mean is 0 when both laws agree; it equals the unbiased MMD^2 for the kernel -|a - b|.
    """
    return unbiased_mmd2(x, y, _negative_distance, chunk_size=chunk_size)
