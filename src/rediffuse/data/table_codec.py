"""A table in a diffusion model's space and back: numbers through a quantile transform to a standard normal
(the Gaussian part), categories as codes (the masked part), a present/missing flag for numbers with missing cells.

The transform (as TabDDPM, Kotelnikov et al. 2023, uses scikit-learn's QuantileTransformer): a value's empirical
CDF p, interpolated between the training quantiles at `REFERENCES` probabilities (the mean of the interpolations
from below and above, so ties map to their midpoint), then z = Phi^-1(p) with p clipped to [1e-7, 1 - 1e-7]. The
inverse interpolates Phi(z) back through the quantiles and rounds as the file wrote the numbers (so the rows in
memory are the rows a CSV gets). The codec is plain JSON in the model spec, so loading a run needs neither the CSV
nor scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr, ndtri
from torch import Tensor

from rediffuse.core.table_diffusion import Layout
from rediffuse.data.table_types import Column, Schema, Table

REFERENCES = 1000  # quantiles kept per numeric column (fewer for short columns)
CLIP = 1e-7
FLAG = ("present", "missing")


@dataclass(frozen=True)
class TableCodec:
    """Encodes a schema's rows as x [N, numbers + categories] (float32: normal scores, then category codes) and
    decodes them; with `target` set the target column is left out of x and given as the class label."""

    schema: Schema
    quantiles: dict[str, tuple[float, ...]]  # numeric column -> its values at the reference probabilities
    conditional: bool = False
    prior: tuple[float, ...] = ()  # a conditional codec's target frequencies in the training rows

    @property
    def numbers(self) -> list[Column]:
        """The numeric columns in x's order."""
        return [c for c in self._modelled() if c.numeric]

    @property
    def categories(self) -> list[tuple[str, int]]:
        """(name, number of categories) of x's category part: categorical columns, then numbers' missing flags."""
        cats = [(c.name, len(c.categories)) for c in self._modelled() if not c.numeric]
        return cats + [(f"{c.name}#missing", 2) for c in self.numbers if c.missing]

    @property
    def num_classes(self) -> int | None:
        """The target's number of categories for a conditional codec, else None."""
        return len(self.schema.column(self.schema.target).categories) if self.conditional else None

    def layout(self) -> Layout:
        """Where x's parts sit, for the model."""
        names = [name for name, _ in self.categories]
        flags = tuple(names.index(f"{c.name}#missing") if c.missing else -1 for c in self.numbers)
        return Layout(len(self.numbers), tuple(k for _, k in self.categories), flags)

    def _modelled(self) -> list[Column]:
        """The columns x holds (all but a conditional codec's target)."""
        return [c for c in self.schema.columns if not (self.conditional and c.name == self.schema.target)]

    @classmethod
    def fit(cls, table: Table, conditional: bool = False) -> TableCodec:
        """The codec of a table's training rows (ValueError if a conditional target is not categorical)."""
        target = table.schema.target
        if conditional and (target is None or table.schema.column(target).numeric):
            raise ValueError("a conditional table model needs a categorical --target column (its classes); "
                             "name one, or drop --conditional")
        quantiles = {}
        for column in table.schema.columns:
            if column.numeric:
                values = table[column.name][~np.isnan(table[column.name])]
                probs = np.linspace(0, 1, min(REFERENCES, len(values)))
                quantiles[column.name] = tuple(float(q) for q in np.quantile(values, probs))
        prior = ()
        if conditional:
            counts = np.bincount(table[target], minlength=len(table.schema.column(target).categories))
            prior = tuple(float(c) for c in counts / counts.sum())
        return cls(table.schema, quantiles, conditional, prior)

    def encode(self, table: Table) -> tuple[Tensor, Tensor | None]:
        """(x [N, D] float32, labels [N] or None) of a table's rows."""
        parts = [self.to_normal(c.name, table[c.name]) for c in self.numbers]
        parts += [table[name].astype(np.float64) for name, _ in self.categories if "#" not in name]
        parts += [np.isnan(table[c.name]).astype(np.float64) for c in self.numbers if c.missing]
        x = torch.from_numpy(np.stack(parts, 1) if parts else np.zeros((len(table), 0))).float()
        labels = torch.from_numpy(table[self.schema.target]).long() if self.conditional else None
        return x, labels

    def decode(self, x: Tensor, labels: Tensor | None = None) -> Table:
        """The rows of x [N, D] (and the target's labels for a conditional codec) as a Table."""
        x = x.detach().cpu().double().numpy()
        n_num = len(self.numbers)
        values: dict[str, np.ndarray] = {}
        names = [name for name, _ in self.categories]
        codes = {name: np.rint(x[:, n_num + j]).astype(np.int64) for j, name in enumerate(names)}
        for j, column in enumerate(self.numbers):
            v = self.from_normal(column.name, x[:, j])
            if column.missing:
                v = np.where(codes[f"{column.name}#missing"] == 1, np.nan, v)
            values[column.name] = v
        for name, count in self.categories:
            if "#" not in name:
                values[name] = np.clip(codes[name], 0, count - 1)
        if self.conditional:
            if labels is None:
                raise ValueError("a conditional table model's rows need their labels (the target column)")
            values[self.schema.target] = labels.detach().cpu().numpy().astype(np.int64)
        return Table(self.schema, {name: values[name] for name in self.schema.names})

    def to_normal(self, name: str, v: np.ndarray) -> np.ndarray:
        """Normal scores of a numeric column's values (0 where missing)."""
        q = np.asarray(self.quantiles[name])
        probs = np.linspace(0, 1, len(q))
        present = np.nan_to_num(v, nan=float(q[len(q) // 2]))
        up = np.interp(present, q, probs)
        down = -np.interp(-present, -q[::-1], -probs[::-1])
        z = ndtri(np.clip(0.5 * (up + down), CLIP, 1 - CLIP))
        return np.where(np.isnan(v), 0.0, z)

    def from_normal(self, name: str, z: np.ndarray) -> np.ndarray:
        """A numeric column's values of normal scores, rounded as the file wrote them."""
        q = np.asarray(self.quantiles[name])
        return self.schema.column(name).as_written(np.interp(ndtr(z), np.linspace(0, 1, len(q)), q))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"schema": self.schema.to_dict(), "quantiles": {k: list(v) for k, v in self.quantiles.items()},
                "conditional": self.conditional, "prior": list(self.prior)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TableCodec:
        """A codec from its JSON form."""
        return cls(Schema.from_dict(values["schema"]), {k: tuple(v) for k, v in values["quantiles"].items()},
                   bool(values.get("conditional", False)), tuple(values.get("prior", ())))
