"""Input handling shared by the metrics: float64 [N, D] tensors, seeded generators, row chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray]


def as_features(x: ArrayLike, device: torch.device | str | None = None) -> Tensor:
    """Return `x` as a float64 [N, D] tensor; a 1-D input becomes [N, 1]."""
    if isinstance(x, Tensor):
        t = x.detach().to(device=device, dtype=torch.float64)
    else:
        t = torch.tensor(np.asarray(x, dtype=np.float64), device=device)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(f"expected a [N, D] or [N] array, got shape {tuple(t.shape)}")
    return t


def as_feature_pair(x: ArrayLike, y: ArrayLike) -> tuple[Tensor, Tensor]:
    """Return both sets as float64 [N, D] tensors on the device of `x`, with matching D."""
    a = as_features(x)
    b = as_features(y, device=a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def make_generator(seed: int = 0, generator: torch.Generator | None = None) -> torch.Generator:
    """Return `generator` if given, else a CPU generator seeded with `seed`."""
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def row_chunks(x: Tensor, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
    """Yield (start, x[start:start + chunk_size]) over the rows of `x`."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for start in range(0, x.shape[0], chunk_size):
        yield start, x[start : start + chunk_size]


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances [n, m] between the rows of `a` [n, D] and `b` [m, D]."""
    d2 = torch.addmm(b.square().sum(dim=1)[None], a, b.mT, alpha=-2)
    d2 += a.square().sum(dim=1, keepdim=True)
    return d2.clamp_(min=0)
