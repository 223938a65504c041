"""The typed values of tabular data: a column's kind and categories, a table's schema, and a table of rows.

Numbers are float64 arrays with NaN where a cell is missing; categories (booleans included) are int64 codes into
the column's `categories`, and a missing category cell is the code of the column's missing token, itself a
category (so it is modelled like any other value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("numeric", "integer", "categorical", "boolean")
NUMERIC_KINDS = ("numeric", "integer")


@dataclass(frozen=True)
class Column:
    """One column: its name, kind, categories in code order (categorical and boolean) and, for numbers, whether
    some cells are missing (modelled by a present/missing flag) and the token that wrote them."""

    name: str
    kind: str
    categories: tuple[str, ...] = ()
    missing: bool = False
    missing_token: str = ""
    decimals: int | None = None  # numeric: the most decimals a cell was written with (None: full precision)

    @property
    def numeric(self) -> bool:
        """Whether the column holds numbers (numeric or integer)."""
        return self.kind in NUMERIC_KINDS

    def as_written(self, v: np.ndarray) -> np.ndarray:
        """Numbers rounded as the file wrote them: integers whole, decimals to the column's `decimals` (NaN kept)."""
        if self.kind == "integer":
            return np.rint(v)
        return v if self.decimals is None else np.round(v, self.decimals)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "kind": self.kind, "categories": list(self.categories),
                "missing": self.missing, "missing_token": self.missing_token, "decimals": self.decimals}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Column:
        """A Column from its JSON form."""
        return cls(values["name"], values["kind"], tuple(values.get("categories", ())),
                   bool(values.get("missing", False)), values.get("missing_token", ""), values.get("decimals"))


@dataclass(frozen=True)
class Schema:
    """A table's columns in file order, and the target column of conditional models (or None)."""

    columns: tuple[Column, ...]
    target: str | None = None

    @property
    def names(self) -> list[str]:
        """The column names in file order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        """The column called `name` (KeyError if none)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"columns": [c.to_dict() for c in self.columns], "target": self.target}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Schema:
        """A Schema from its JSON form."""
        return cls(tuple(Column.from_dict(c) for c in values["columns"]), values.get("target"))


@dataclass(frozen=True, eq=False)
class Table:
    """Rows of a schema: one array per column, in `schema.columns` order (float64 numbers with NaN for missing,
    int64 category codes)."""

    schema: Schema
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def rows(self, index: np.ndarray | slice) -> Table:
        """The rows at index (an index array or a slice), as a Table."""
        return Table(self.schema, {name: v[index] for name, v in self.values.items()})

    def cells(self, name: str) -> list[str]:
        """A column's cells as a CSV writes them (missing numbers as the column's missing token)."""
        column, v = self.schema.column(name), self.values[name]
        if not column.numeric:
            return [column.categories[int(code)] for code in v]
        if column.kind == "integer":
            return [column.missing_token if np.isnan(x) else str(int(round(x))) for x in v]
        if column.decimals is not None:
            return [column.missing_token if np.isnan(x) else f"{x:.{column.decimals}f}" for x in v]
        return [column.missing_token if np.isnan(x) else f"{x:.10g}" for x in v]
