"""Synthetic-table metrics against known answers on a small Gaussian copula (rediffuse.evaluation.tables).

The copula has six correlated standard normals: x0 = z0, x1 = 2 + 3 z1 (so corr(x0, x1) = 0.6 exactly),
x2 = exp(z2 / 2), c0 = z3 cut at -0.5 and 0.6 into three categories, c1 = (z4 > 0.3) as a boolean, and m = z5
with about 10% of cells missing at random. Tables of 2000 rows; the measured values quoted in the docstrings
came from these seeds (numpy 2.4, scipy 1.17, scikit-learn 1.9).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy.stats import norm

from rediffuse.data.table_types import Column, Schema, Table
from rediffuse.evaluation.tables import (
    alpha_precision_beta_recall,
    classifier_two_sample,
    column_shapes,
    dcr_share,
    ml_efficiency,
    pair_trends,
    trend_matrix,
)

ROWS = 2000
RHO_X0_X1 = 0.6
CORRELATION = np.array([
    [1.0, 0.6, 0.3, 0.4, 0.6, 0.2],
    [0.6, 1.0, 0.4, 0.3, 0.5, 0.0],
    [0.3, 0.4, 1.0, 0.2, 0.3, 0.5],
    [0.4, 0.3, 0.2, 1.0, 0.4, 0.0],
    [0.6, 0.5, 0.3, 0.4, 1.0, 0.3],
    [0.2, 0.0, 0.5, 0.0, 0.3, 1.0],
])
SCHEMA = Schema((
    Column("x0", "numeric"),
    Column("x1", "numeric"),
    Column("x2", "numeric"),
    Column("c0", "categorical", ("low", "mid", "high")),
    Column("c1", "boolean", ("false", "true")),
    Column("m", "numeric", missing=True),
), target="c1")


@cache
def draw(seed: int, rows: int = ROWS) -> Table:
    """`rows` independent rows of the copula."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, 6)) @ np.linalg.cholesky(CORRELATION).T
    return Table(SCHEMA, {
        "x0": z[:, 0],
        "x1": 2.0 + 3.0 * z[:, 1],
        "x2": np.exp(0.5 * z[:, 2]),
        "c0": np.digitize(z[:, 3], [-0.5, 0.6]).astype(np.int64),
        "c1": (z[:, 4] > 0.3).astype(np.int64),
        "m": np.where(rng.random(rows) < 0.1, np.nan, z[:, 5]),
    })


def replaced(table: Table, **columns: np.ndarray) -> Table:
    """`table` with some columns' values replaced."""
    return Table(table.schema, {**table.values, **columns})


def shuffled_columns(table: Table, seed: int) -> Table:
    """`table` with every column permuted independently (same marginals, no dependence)."""
    rng = np.random.default_rng(seed)
    return Table(table.schema, {name: rng.permutation(v) for name, v in table.values.items()})


def test_identical_tables_score_one():
    """Every shape and trend score of a table against itself is exactly 1 and the trend matrix is zero."""
    real = draw(0)
    shapes, trends = column_shapes(real, real), pair_trends(real, real)
    assert shapes.per_column == {name: 1.0 for name in SCHEMA.names}
    assert shapes.mean == pytest.approx(1.0, abs=1e-12) and shapes.error == pytest.approx(0.0, abs=1e-12)
    assert len(trends.per_pair) == 15 and trends.mean == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(trend_matrix(trends, SCHEMA.names), np.zeros((6, 6)), atol=1e-12)


def test_column_shuffle_keeps_shapes_and_breaks_trends():
    """Permuting each column keeps every shape at 1 but drops the (x0, x1) trend to 1 - rho/2 (measured 0.7001 vs
    0.7) and the trend mean to 0.863, against 0.960 (and 0.989 for x0, x1) for fresh draws."""
    real = draw(0)
    shuffled = shuffled_columns(real, seed=5)
    assert column_shapes(real, shuffled).per_column == {name: 1.0 for name in SCHEMA.names}
    broken, fresh = pair_trends(real, shuffled), pair_trends(real, draw(1))
    assert broken.per_pair[("x0", "x1")] == pytest.approx(1.0 - RHO_X0_X1 / 2.0, abs=0.04)
    assert fresh.per_pair[("x0", "x1")] > 0.97
    assert broken.mean < 0.9 < 0.94 < fresh.mean


def test_trend_matrix_is_symmetric_error_of_pairs():
    """The heatmap matrix holds 1 - each pair score on both sides of a zero diagonal, in the order asked."""
    trends = pair_trends(draw(0), shuffled_columns(draw(0), seed=5))
    names = ["m", "x0", "c1", "x1", "c0", "x2"]
    matrix = trend_matrix(trends, names)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(np.diag(matrix), np.zeros(6))
    assert matrix[1, 3] == pytest.approx(1.0 - trends.per_pair[("x0", "x1")])
    assert matrix[0, 2] == pytest.approx(1.0 - trends.per_pair[("c1", "m")])


def test_ks_shape_of_shifted_normal_matches_closed_form():
    """N(0, 1) against fresh N(0.5, 1) draws: 1 - KS measured 0.8030, closed form 2 - 2 Phi(0.25) = 0.8026."""
    synth = draw(1)
    score = column_shapes(draw(0), replaced(synth, x0=synth["x0"] + 0.5)).per_column["x0"]
    assert score == pytest.approx(2.0 - 2.0 * norm.cdf(0.25), abs=0.03)


def test_missing_share_scales_number_shape():
    """Hiding 200 more cells of m (missing share 0.1045 -> 0.2045) scales its shape by 0.9: measured 0.8920; a column
    missing everywhere in the synthetic table scores 0."""
    real = draw(0)
    m = real["m"].copy()
    m[np.random.default_rng(7).choice(np.flatnonzero(~np.isnan(m)), 200, replace=False)] = np.nan
    score = column_shapes(real, replaced(real, m=m)).per_column["m"]
    assert 0.9 * 0.97 < score <= 0.9 + 1e-12
    assert column_shapes(real, replaced(real, m=np.full(ROWS, np.nan))).per_column["m"] == 0.0


def test_category_scores_against_hand_computed_total_variation():
    """Frequencies (1/2, 1/4, 1/4) vs (1/4, 3/4, 0) have TV 1/2; joint tables of two categories likewise 1/2."""
    schema = Schema((Column("a", "categorical", ("p", "q", "r")), Column("b", "boolean", ("false", "true"))))
    real = Table(schema, {"a": np.array([0, 0, 1, 2]), "b": np.array([0, 1, 1, 1])})
    synth = Table(schema, {"a": np.array([0, 1, 1, 1]), "b": np.array([0, 0, 0, 1])})
    shapes = column_shapes(real, synth)
    assert shapes.per_column == {"a": 0.5, "b": 0.5}
    # joint cells (a, b): real {00, 01, 11, 21}, synth {00, 10, 10, 11}: |diff| = 1/4 each on 01, 10, 11, 21 and 0
    # on 00 -> TV = 1/2
    assert pair_trends(real, synth).per_pair == {("a", "b"): pytest.approx(0.5)}


def test_classifier_two_sample_separates_shifted_rows():
    """Fresh draws give AUC 0.491 (< 0.6); shifting x0 by two standard deviations gives 0.965 (> 0.9)."""
    real, synth = draw(0), draw(1)
    assert classifier_two_sample(real, synth) < 0.6
    assert classifier_two_sample(real, replaced(synth, x0=synth["x0"] + 2.0)) > 0.9


def test_dcr_share_flags_copies():
    """Copies of the training rows are all nearer to it (share 1.0); fresh draws give 0.514."""
    train, heldout = draw(0), draw(2)
    assert dcr_share(train, heldout, train) > 0.95
    assert 0.4 <= dcr_share(train, heldout, draw(1)) <= 0.6


def test_ml_efficiency_of_fresh_and_broken_synthetic_rows():
    """Predicting c1: real AUC 0.783, fresh synthetic 0.786, synthetic with c1 shuffled 0.467."""
    train, heldout, synth = draw(0), draw(2), draw(1)
    fresh = ml_efficiency(train, heldout, synth, "c1")
    assert fresh.metric == "roc_auc" and fresh.real > 0.7
    assert abs(fresh.synthetic - fresh.real) < 0.05
    shuffled = replaced(synth, c1=np.random.default_rng(3).permutation(synth["c1"]))
    assert abs(ml_efficiency(train, heldout, shuffled, "c1").synthetic - 0.5) < 0.1


def test_ml_efficiency_regression_and_awkward_classes():
    """Regressing x0: RMSE 0.769 (real) vs 0.767 (fresh). Three-class c0 with no 'high' rows in the synthetic table
    still scores (0.538 vs 0.618); a synthetic target of a single class scores exactly 0.5."""
    train, heldout, synth = draw(0), draw(2), draw(1)
    regression = ml_efficiency(train, heldout, synth, "x0")
    assert regression.metric == "rmse" and 0.0 < regression.real < 1.0
    assert regression.synthetic == pytest.approx(regression.real, rel=0.1)
    missing_class = ml_efficiency(train, heldout, synth.rows(synth["c0"] != 2), "c0")
    assert 0.5 < missing_class.synthetic < missing_class.real
    single = ml_efficiency(train, heldout, replaced(synth, c1=np.zeros(ROWS, dtype=np.int64)), "c1")
    assert single.synthetic == 0.5


def test_alpha_precision_beta_recall_of_fresh_and_collapsed_rows():
    """Fresh draws: precision 0.984, recall 0.956; five real rows jittered: recall 0.025; x0 and x1 spread three
    times wider: precision 0.292."""
    real, synth = draw(0), draw(1)
    fresh = alpha_precision_beta_recall(real, synth)
    assert fresh.alpha_precision > 0.9 and fresh.beta_recall > 0.9
    assert alpha_precision_beta_recall(real, synth) == fresh
    rng = np.random.default_rng(4)
    few = real.rows(rng.integers(0, 5, ROWS))
    jitter = {name: few[name] + 0.01 * rng.standard_normal(ROWS) for name in ("x0", "x1", "x2", "m")}
    assert alpha_precision_beta_recall(real, replaced(few, **jitter)).beta_recall < 0.2
    wide = replaced(synth, x0=3.0 * synth["x0"], x1=2.0 + 3.0 * (synth["x1"] - 2.0))
    assert alpha_precision_beta_recall(real, wide).alpha_precision < 0.5


def test_tables_of_other_schemas_are_refused():
    """Tables whose columns differ are refused with ValueError."""
    real = draw(0)
    other = Table(Schema(SCHEMA.columns[:-1]), {name: real[name] for name in SCHEMA.names[:-1]})
    with pytest.raises(ValueError, match="schema"):
        column_shapes(real, other)
    with pytest.raises(ValueError, match="schema"):
        dcr_share(real, real, other)
