"""The reference synthesisers on a Gaussian copula with known correlations: the copula keeps the trends that
independent marginals lose, every one keeps the schema, and the copy (and SMOTE's near-copies) show in DCR."""

from __future__ import annotations

import numpy as np
import pytest

from rediffuse.data.table_types import Schema, Table
from rediffuse.data.tables import build_column
from rediffuse.evaluation.tables import column_shapes, dcr_share, pair_trends
from rediffuse.evaluation.tables.baselines import BASELINES, gaussian_copula, independent


def copula_table(n: int, seed: int) -> Table:
    """Rows of an exponential and a normal number, a 3-way band from thresholds and a number with 10% missing,
    their latent normals correlated 0.7 pairwise."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(4), np.full((4, 4), 0.7) + 0.3 * np.eye(4), size=n)
    columns = {"x": [f"{v:.4f}" for v in np.exp(z[:, 0])], "y": [f"{v:.4f}" for v in z[:, 1]],
               "band": list(np.array(["a", "b", "c"])[np.digitize(z[:, 2], (-0.4, 0.6))]),
               "w": ["" if rng.uniform() < 0.1 else f"{v:.3f}" for v in z[:, 3]]}
    built = [build_column(name, cells) for name, cells in columns.items()]
    return Table(Schema(tuple(c for c, _ in built)), {c.name: a for c, a in built})


@pytest.fixture(scope="module")
def halves():
    return copula_table(2000, 0), copula_table(2000, 1)


def test_the_copula_keeps_the_trends_that_independent_marginals_lose(halves):
    """Measured trend errors: copula 0.054, independent marginals 0.295, another real draw (the floor) 0.037;
    independent marginals' shape error 0.022."""
    train, fresh = halves
    errors = {name: pair_trends(train, f(train, 2000, 0)).error for name, f in
              [("copula", gaussian_copula), ("independent", independent)]}
    floor = pair_trends(train, fresh).error
    assert errors["copula"] < 2 * floor + 0.01 and errors["independent"] > 3 * errors["copula"]
    assert column_shapes(train, independent(train, 2000, 0)).error < 0.05


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_keeps_the_schema_and_the_copies_show(halves, name):
    """Measured DCR shares: independent 0.484, copula 0.514, SMOTE 0.912 (its rows lie between near neighbours),
    copy 1.0."""
    train, fresh = halves
    rows = BASELINES[name](train, 1000, 3)
    assert len(rows) == 1000 and rows.schema == train.schema
    assert np.isnan(rows["w"]).any() and not np.isnan(rows["x"]).any()
    share = dcr_share(train, fresh, rows)
    expected = {"copy of training rows": (0.95, 1.0), "SMOTE": (0.75, 1.0)}.get(name, (0.4, 0.6))
    assert expected[0] <= share <= expected[1]
