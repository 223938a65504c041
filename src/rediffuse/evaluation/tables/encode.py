"""Encoding shared by the table metrics: schema checks, equal-size subsamples, row embeddings, model inputs, bins.

The row embedding (`Embedding`), used by alpha-precision / beta-recall and distance to closest record, is fitted
on one reference table and then applied to every table, so all tables share one layout and one scale:

* a number x becomes (x - median) / s with the reference column's median and s = IQR / 1.349 (the IQR of a
  standard normal, so a Gaussian column gets unit scale); s falls back to the standard deviation, then to 1, when
  it is zero. A missing cell becomes 0 and, for columns that may be missing (`column.missing`, or a NaN in the
  reference), an extra 0/1 missing-indicator coordinate is set.
* a category (booleans included) becomes the one-hot vector over `column.categories` (the missing token is a
  category like any other), so two different categories are sqrt(2) apart.

Gradient-boosting inputs (`model_inputs`) keep numbers raw (NaN is native missing) and categories as codes marked
categorical, except columns with more categories than the model's 255 bins, which are passed as ordinal codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from rediffuse.data.table_types import Column, Schema, Table

MAX_CATEGORIES = 255
NORMAL_IQR = 1.3489795003921634


def _layout(schema: Schema) -> list[tuple[str, str, int]]:
    return [(c.name, c.kind, len(c.categories)) for c in schema.columns]


def same_schema(*tables: Table, schema: Schema | None = None) -> Schema:
    """The schema shared by all `tables` (and `schema` if given); ValueError if names, kinds or categories differ."""
    first = tables[0].schema if schema is None else schema
    for table in tables:
        if _layout(table.schema) != _layout(first):
            raise ValueError("tables must share one schema (same column names, kinds and category counts)")
        if len(table) == 0:
            raise ValueError("tables must hold at least one row")
    return first


def subsample(table: Table, size: int, seed: int) -> Table:
    """`size` rows of `table` drawn without replacement by a seeded generator, in their original order."""
    if size >= len(table):
        return table
    index = np.sort(np.random.default_rng(seed).choice(len(table), size=size, replace=False))
    return table.rows(index)


def equal_rows(a: Table, b: Table, seed: int) -> tuple[Table, Table]:
    """Both tables cut to the smaller row count (the larger one subsampled deterministically)."""
    size = min(len(a), len(b))
    return subsample(a, size, seed), subsample(b, size, seed + 1)


def has_missing(column: Column, values: np.ndarray) -> bool:
    """Whether a number column may hold missing cells (declared by the schema or seen in `values`)."""
    return column.missing or bool(np.isnan(values).any())


@dataclass(frozen=True)
class _Scale:
    centre: float
    scale: float
    indicator: bool


def _number_scale(column: Column, values: np.ndarray) -> _Scale:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return _Scale(0.0, 1.0, has_missing(column, values))
    low, centre, high = np.quantile(present, [0.25, 0.5, 0.75])
    scale = (high - low) / NORMAL_IQR
    if not scale > 0:
        scale = float(present.std())
    if not scale > 0:
        scale = 1.0
    return _Scale(float(centre), float(scale), has_missing(column, values))


class Embedding:
    """Rows as real vectors: robust-standardised numbers with missing indicators and one-hot categories."""

    def __init__(self, reference: Table) -> None:
        self.schema = reference.schema
        self.scales = {c.name: _number_scale(c, reference[c.name]) for c in self.schema.columns if c.numeric}

    def __call__(self, table: Table) -> np.ndarray:
        """The [rows, features] float64 embedding of `table`."""
        same_schema(table, schema=self.schema)
        parts: list[np.ndarray] = []
        for column in self.schema.columns:
            values = table[column.name]
            if column.numeric:
                s = self.scales[column.name]
                missing = np.isnan(values)
                parts.append(np.where(missing, 0.0, (values - s.centre) / s.scale)[:, None])
                if s.indicator:
                    parts.append(missing.astype(np.float64)[:, None])
            else:
                parts.append(np.eye(len(column.categories))[np.asarray(values, dtype=np.int64)])
        return np.concatenate(parts, axis=1)


def model_inputs(table: Table, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(features [rows, len(names)] float64, categorical mask) of the named columns for gradient boosting."""
    columns = [table.schema.column(name) for name in names]
    features = np.stack([np.asarray(table[c.name], dtype=np.float64) for c in columns], axis=1)
    categorical = np.array([not c.numeric and len(c.categories) <= MAX_CATEGORIES for c in columns], dtype=bool)
    return features.reshape(len(table), len(columns)), categorical


Boosting = Union[HistGradientBoostingClassifier, HistGradientBoostingRegressor]


def boosting(classify: bool, categorical: np.ndarray, seed: int) -> Boosting:
    """A default histogram gradient-boosting classifier or regressor with native categorical columns."""
    model = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
    mask = categorical if categorical.any() else None
    return model(categorical_features=mask, random_state=seed)


def frequencies(codes: np.ndarray, size: int) -> np.ndarray:
    """The share of each code 0..size-1 in `codes`."""
    return np.bincount(codes, minlength=size)[:size] / max(len(codes), 1)


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """The distinct interior edges of `bins` quantile bins of the present `values`."""
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin codes 0..len(edges) of numbers cut at `edges`, and len(edges)+1 for missing cells."""
    codes = np.searchsorted(edges, values, side="right")
    return np.where(np.isnan(values), len(edges) + 1, codes).astype(np.int64)
