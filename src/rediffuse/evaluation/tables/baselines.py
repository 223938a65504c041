"""Reference synthesisers a table model is measured against: independent marginals, a Gaussian copula,
SMOTE-style interpolation and a copy of the training rows (the privacy foil). Each maps (training rows, n, seed)
to n synthetic rows of the same schema.

- Independent marginals: every column drawn on its own from the training rows (shapes at the floor, no trends).
- Gaussian copula (as SDV's GaussianCopulaSynthesizer describes it; Patki et al. 2016): each column's values as
  normal scores (numbers by the quantile transform of `data.table_codec`, categories by drawing a uniform inside
  the category's interval of the cumulative frequencies, a number's missing flag as a two-category column), their
  correlation matrix estimated, and rows drawn from that multivariate normal and mapped back.
- SMOTE-style (Chawla et al. 2002): a training row, one of its 5 nearest neighbours (of its target class when there
  is one), numbers interpolated at a uniform point between them, each category taken from the row or the
  neighbour with the same odds.
- Copy: training rows drawn without replacement (with replacement beyond the training size).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.neighbors import NearestNeighbors

from rediffuse.data.table_codec import TableCodec
from rediffuse.data.table_types import Table
from rediffuse.evaluation.tables.encode import Embedding

Synthesiser = Callable[[Table, int, int], Table]


def independent(train: Table, n: int, seed: int) -> Table:
    """Each column drawn independently from the training rows."""
    rng = np.random.default_rng(seed)
    return Table(train.schema, {name: v[rng.integers(0, len(v), n)] for name, v in train.values.items()})


def copy_rows(train: Table, n: int, seed: int) -> Table:
    """Training rows themselves."""
    rng = np.random.default_rng(seed)
    index = rng.permutation(len(train))[:n] if n <= len(train) else rng.integers(0, len(train), n)
    return train.rows(index)


def gaussian_copula(train: Table, n: int, seed: int) -> Table:
    """Rows from a Gaussian copula fitted to the training rows (module docstring)."""
    rng = np.random.default_rng(seed)
    codec = TableCodec.fit(train)
    scores, inverse = [], []
    for column in train.schema.columns:
        v = train[column.name]
        if column.numeric:
            scores.append(codec.to_normal(column.name, v))
            inverse.append(lambda z, name=column.name: codec.from_normal(name, z))
            if column.missing:
                flags = np.isnan(v).astype(np.int64)
                scores.append(_category_scores(flags, 2, rng))
                inverse.append(_category_inverse(flags, 2))
        else:
            count = len(column.categories)
            scores.append(_category_scores(v, count, rng))
            inverse.append(_category_inverse(v, count))
    z = np.stack(scores, 1)
    corr = np.nan_to_num(np.corrcoef(z, rowvar=False), nan=0.0)  # a constant column correlates with nothing
    np.fill_diagonal(corr, 1.0 + 1e-6)
    drawn = rng.multivariate_normal(np.zeros(z.shape[1]), corr, size=n, method="cholesky")
    back = [f(drawn[:, j]) for j, f in enumerate(inverse)]
    values, j = {}, 0
    for column in train.schema.columns:
        values[column.name] = back[j]
        j += 1
        if column.numeric and column.missing:
            values[column.name] = np.where(back[j] == 1, np.nan, values[column.name])
            j += 1
    return Table(train.schema, values)


def _category_scores(codes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Normal scores of category codes: a uniform inside each code's cumulative-frequency interval."""
    edges = np.concatenate([[0.0], np.cumsum(np.bincount(codes, minlength=count) / len(codes))])
    u = edges[codes] + rng.uniform(size=len(codes)) * (edges[codes + 1] - edges[codes])
    return ndtri(np.clip(u, 1e-7, 1 - 1e-7))


def _category_inverse(codes: np.ndarray, count: int) -> Callable[[np.ndarray], np.ndarray]:
    """The map from normal scores back to the codes of `_category_scores`."""
    edges = np.cumsum(np.bincount(codes, minlength=count) / len(codes))
    return lambda z: np.minimum(np.searchsorted(edges, ndtr(z), side="right"), count - 1).astype(np.int64)


def smote(train: Table, n: int, seed: int, k: int = 5) -> Table:
    """Rows interpolated between training rows and their nearest neighbours (module docstring)."""
    rng = np.random.default_rng(seed)
    embedded = Embedding(train)(train)
    target = train.schema.target
    groups = [np.arange(len(train))] if target is None else \
        [np.flatnonzero(train[target] == c) for c in np.unique(train[target])]
    neighbour = np.empty((len(train), k), dtype=np.int64)
    for rows in groups:
        m = min(k + 1, len(rows))
        _, idx = NearestNeighbors(n_neighbors=m).fit(embedded[rows]).kneighbors(embedded[rows])
        picks = rows[idx[:, 1:]] if m > 1 else rows[idx]
        neighbour[rows] = picks[:, rng.integers(0, picks.shape[1], k)] if picks.shape[1] < k else picks[:, :k]
    base = rng.integers(0, len(train), n)
    other = neighbour[base, rng.integers(0, k, n)]
    lam = rng.uniform(size=n)
    values = {}
    for column in train.schema.columns:
        a, b = train[column.name][base], train[column.name][other]
        if column.numeric:
            mixed = np.where(np.isnan(a) | np.isnan(b), a, a + lam * (b - a))
            values[column.name] = column.as_written(mixed)
        else:
            values[column.name] = np.where(rng.uniform(size=n) < lam, b, a)
    return Table(train.schema, values)


BASELINES: dict[str, Synthesiser] = {"independent marginals": independent, "Gaussian copula": gaussian_copula,
                                     "SMOTE": smote, "copy of training rows": copy_rows}
