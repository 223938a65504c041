"""k-NN manifold metrics: precision, recall, density and coverage of a fake sample against a real one."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import ArrayLike, as_feature_pair, row_chunks, squared_distances


def _knn_squared_radii(x: Tensor, k: int, chunk_size: int) -> Tensor:
    """Squared distance from each row of `x` [N, D] to its k-th nearest other row -> [N]."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"need 1 <= k < N, got k={k}, N={x.shape[0]}")
    chunks = row_chunks(x, chunk_size)
    return torch.cat([squared_distances(rows, x).topk(k + 1, dim=1, largest=False).values[:, k] for _, rows in chunks])


def _manifold_scores(real: ArrayLike, fake: ArrayLike, k: int, chunk_size: int, with_recall: bool) -> dict[str, float]:
    """Precision, density, coverage (and recall if asked) from one chunked pass over real-to-fake distances.

    Squared distances are taken real-row by real-row, as the real radii are, so when fake == real each
    ball's boundary point compares equal to its radius bit for bit.
    """
    r, f = as_feature_pair(real, fake)
    real_radii = _knn_squared_radii(r, k, chunk_size)
    fake_radii = _knn_squared_radii(f, k, chunk_size) if with_recall else None
    precise = torch.zeros(f.shape[0], dtype=torch.bool, device=r.device)
    inside = r.new_zeros((), dtype=torch.long)
    covered, recalled = [], []
    for start, rows in row_chunks(r, chunk_size):
        squared = squared_distances(rows, f)
        in_real_ball = squared <= real_radii[start : start + rows.shape[0], None]
        precise |= in_real_ball.any(dim=0)
        inside += in_real_ball.sum()
        covered.append(in_real_ball.any(dim=1))
        if fake_radii is not None:
            recalled.append((squared <= fake_radii).any(dim=1))
    scores = {
        "precision": float(precise.double().mean()),
        "density": float(inside) / (k * f.shape[0]),
        "coverage": float(torch.cat(covered).double().mean()),
    }
    if fake_radii is not None:
        scores["recall"] = float(torch.cat(recalled).double().mean())
    return scores


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3, *, chunk_size: int = 1024) -> tuple[float, float]:
    """(precision, recall) of `fake` [M, D] against `real` [N, D] with k-NN ball manifolds.

    Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing Generative Models":
    precision = fraction of fake points inside some real ball B(x_i, d_k(x_i)), d_k the distance to the
    k-th nearest other real point; recall = fraction of real points inside some fake ball.
    """
    scores = _manifold_scores(real, fake, k, chunk_size, with_recall=True)
    return scores["precision"], scores["recall"]


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5, *, chunk_size: int = 1024) -> tuple[float, float]:
    """(density, coverage) of `fake` [M, D] against `real` [N, D].

    Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models":
    density = (1 / kM) sum_j #{i : y_j in B(x_i, d_k(x_i))} (about 1 when the laws agree, unbounded above);
    coverage = fraction of real balls B(x_i, d_k(x_i)) holding at least one fake point.
    """
    scores = _manifold_scores(real, fake, k, chunk_size, with_recall=False)
    return scores["density"], scores["coverage"]


def prdc(real: ArrayLike, fake: ArrayLike, k: int = 5, *, chunk_size: int = 1024) -> dict[str, float]:
    """{"precision", "recall", "density", "coverage"} of `fake` against `real`, all with the same k (see above)."""
    return _manifold_scores(real, fake, k, chunk_size, with_recall=True)
