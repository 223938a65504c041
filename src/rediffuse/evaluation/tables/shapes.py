"""Column shapes and pair trends: how well each column's distribution, and each pair's dependence, is kept.

Column shape of a number column: (1 - |m_real - m_synth|) * (1 - KS), with m the share of missing cells and KS the
two-sample Kolmogorov-Smirnov statistic (`scipy.stats.ks_2samp`) of the present values; the KS factor is 1 when
neither table has a present value and 0 when only one has none. Without missing cells this is SDMetrics'
KSComplement, the column-shape score of the TabSyn papers. Column shape of a category column: 1 - the total
variation distance (half the L1 distance) of the category frequencies.

Pair trend of two number columns: 1 - |rho_real - rho_synth| / 2, rho the Pearson correlation over the rows where
both cells are present (0 when fewer than two such rows or a constant column). Pair trend of any pair involving a
category column: 1 - the total variation distance of the joint frequency tables, number columns cut into `bins`
quantile bins of the real column (the same edges applied to the synthetic column) and missing cells their own bin.
All scores lie in [0, 1], 1 meaning identical; `Shapes.error` (x 100) is the "column-shape error" in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import ks_2samp

from rediffuse.data.table_types import Column, Table
from rediffuse.evaluation.tables.encode import bin_codes, frequencies, quantile_edges, same_schema


@dataclass(frozen=True)
class Shapes:
    """Per-column shape scores in [0, 1] (1 = same marginal) and their mean."""

    per_column: dict[str, float]
    mean: float

    @property
    def error(self) -> float:
        """1 - mean, the column-shape error (as a fraction; x 100 for percent)."""
        return 1.0 - self.mean


@dataclass(frozen=True)
class Trends:
    """Per-pair trend scores in [0, 1] (1 = same dependence) keyed by column names in schema order, and their mean."""

    per_pair: dict[tuple[str, str], float]
    mean: float

    @property
    def error(self) -> float:
        """1 - mean, the pair-trend error (as a fraction; x 100 for percent)."""
        return 1.0 - self.mean


def _mean(scores: list[float]) -> float:
    return float(np.mean(scores)) if scores else float("nan")


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two frequency vectors of one length."""
    return 0.5 * float(np.abs(p - q).sum())


def _number_shape(real: np.ndarray, synth: np.ndarray) -> float:
    real_missing, synth_missing = np.isnan(real), np.isnan(synth)
    agreement = 1.0 - abs(float(real_missing.mean()) - float(synth_missing.mean()))
    a, b = real[~real_missing], synth[~synth_missing]
    if a.size == 0 or b.size == 0:
        return agreement * float(a.size == b.size)
    return agreement * (1.0 - float(ks_2samp(a, b).statistic))


def column_shape(column: Column, real: np.ndarray, synth: np.ndarray) -> float:
    """The shape score in [0, 1] of one column's real and synthetic cells."""
    if column.numeric:
        return _number_shape(real, synth)
    size = len(column.categories)
    return 1.0 - total_variation(frequencies(real, size), frequencies(synth, size))


def column_shapes(real: Table, synth: Table) -> Shapes:
    """The shape score of every column and their mean."""
    schema = same_schema(real, synth)
    scores = {c.name: column_shape(c, real[c.name], synth[c.name]) for c in schema.columns}
    return Shapes(scores, _mean(list(scores.values())))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 2:
        return 0.0
    a, b = x[both] - x[both].mean(), y[both] - y[both].mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / norm if norm > 0 else 0.0


def _discrete(column: Column, real: np.ndarray, synth: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(real codes, synthetic codes, code count) of a column, numbers cut into quantile bins of the real cells."""
    if not column.numeric:
        return np.asarray(real, dtype=np.int64), np.asarray(synth, dtype=np.int64), len(column.categories)
    edges = quantile_edges(real, bins)
    return bin_codes(real, edges), bin_codes(synth, edges), len(edges) + 2


def pair_trend(first: Column, second: Column, real: Table, synth: Table, bins: int = 10) -> float:
    """The trend score in [0, 1] of one pair of columns."""
    a, b = first.name, second.name
    if first.numeric and second.numeric:
        return 1.0 - abs(_pearson(real[a], real[b]) - _pearson(synth[a], synth[b])) / 2.0
    real_a, synth_a, size_a = _discrete(first, real[a], synth[a], bins)
    real_b, synth_b, size_b = _discrete(second, real[b], synth[b], bins)
    joint_real = frequencies(real_a * size_b + real_b, size_a * size_b)
    joint_synth = frequencies(synth_a * size_b + synth_b, size_a * size_b)
    return 1.0 - total_variation(joint_real, joint_synth)


def pair_trends(real: Table, synth: Table, bins: int = 10) -> Trends:
    """The trend score of every pair of columns and their mean."""
    schema = same_schema(real, synth)
    scores = {(f.name, s.name): pair_trend(f, s, real, synth, bins) for f, s in combinations(schema.columns, 2)}
    return Trends(scores, _mean(list(scores.values())))


def trend_matrix(trends: Trends, names: list[str]) -> np.ndarray:
    """The symmetric [len(names), len(names)] matrix of 1 - pair trend score, zero on the diagonal, for a heatmap."""
    matrix = np.zeros((len(names), len(names)))
    for i, j in combinations(range(len(names)), 2):
        pair = (names[i], names[j])
        score = trends.per_pair[pair] if pair in trends.per_pair else trends.per_pair[pair[::-1]]
        matrix[i, j] = matrix[j, i] = 1.0 - score
    return matrix
