"""Diffusion of table rows (`--objective table`): the numbers' Gaussian denoising and the categories' masked
diffusion at one time t, one network over all columns (`core.table_diffusion` has the formulas).

Each step draws stratified times t [B], the numbers' noise, one uniform per category cell (masked where u < t)
and, for a conditional model, the label-dropout mask (the null class for classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rediffuse.core.spec import DataInfo, ModelSpec
from rediffuse.core.table_diffusion import TableDenoiser, table_loss, training_times
from rediffuse.data.dataset import Data
from rediffuse.data.table_codec import TableCodec
from rediffuse.errors import ConfigError
from rediffuse.keys import need
from rediffuse.nets import NETS
from rediffuse.objectives.base import Batch, Configured, StepDraws, StepGenerators
from rediffuse.objectives.gaussian import build_net, dropped_labels, null_label

TABLE_NETS = ("table-mlp", "table-transformer")


@dataclass(frozen=True, eq=False)
class TableDraws(StepDraws):
    """One step's randomness: times t [B] (float64), the numbers' noise [B, n], the cells' uniforms [B, c] and
    the label-dropout mask [B]."""

    t: Tensor
    noise: Tensor
    u: Tensor
    drop: Tensor | None = None


class TableObjective(Configured):
    """Mixed-type diffusion of table rows (module docstring)."""

    name = "table"

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        c = self.config
        need(c.data.startswith("table:"), f"the table objective trains on tables, got data {c.data!r}; use "
                                          "--data table:PATH.csv (or table:wine, ...)")
        need(c.net in ("auto", *TABLE_NETS), f"the table objective trains {', '.join(TABLE_NETS)}, got net "
                                             f"{c.net!r}; use --net auto")
        need(0 <= c.label_dropout < 1, f"label_dropout must be in [0, 1), got {c.label_dropout}")
        need(0 < c.table_mask_power <= 10, f"table_mask_power must be in (0, 10], got {c.table_mask_power}")

    def spec(self, data: Data) -> ModelSpec:
        """The network over the table's columns, the codec (schema and transforms) with the categories' mask power,
        and the data."""
        c, codec = self.config, data.table
        if codec is None:
            raise ConfigError(f"the table objective trains on tables, got {data.kind} data {c.data!r}; use "
                              "--data table:PATH.csv")
        layout = codec.layout()
        net = "table-mlp" if c.net == "auto" else c.net
        net_config = {**c.net_kwargs, "numbers": layout.numbers, "cardinalities": list(layout.cardinalities),
                      "num_classes": codec.num_classes}
        info = DataInfo("table", tuple(data.shape), codec.num_classes, c.data)
        return ModelSpec(net, net_config, info, table={**codec.to_dict(), "mask_power": c.table_mask_power})

    def build(self, spec: ModelSpec) -> nn.Module:
        """The network of a spec."""
        if spec.net not in NETS:
            raise ConfigError(f"unknown table network {spec.net!r}; choose one of {', '.join(TABLE_NETS)}")
        return build_net(spec.net, spec.net_config)

    def model(self, spec: ModelSpec, net: nn.Module) -> TableDenoiser:
        """The denoiser of rows around net, laid out by the spec's codec, with its categories' schedule."""
        return TableDenoiser(net, TableCodec.from_dict(spec.table).layout(), spec.table.get("mask_power", 1.0))

    def draw(self, model: TableDenoiser, batch: Batch, generators: StepGenerators) -> TableDraws:
        """Stratified t (CPU stream "time"), noise ("noise"), cell uniforms ("mask") and label dropout."""
        x, layout = batch.x, model.layout
        t = training_times(len(x), generators.cpu("time")).to(x.device)
        noise = torch.randn((len(x), layout.numbers), generator=generators.device("noise"), device=x.device)
        mask_gen = generators.device("mask")
        u = torch.rand((len(x), len(layout.cardinalities)), generator=mask_gen, device=x.device, dtype=torch.float64)
        drop = None
        if batch.labels is not None and null_label(model) is not None:
            drop = torch.rand(batch.labels.shape, generator=mask_gen, device=x.device) < self.config.label_dropout
        return TableDraws(t, noise, u, drop)

    def loss(self, model: TableDenoiser, batch: Batch, draws: TableDraws) -> Tensor:
        """The per-row loss [B] (`core.table_diffusion.table_loss`)."""
        cond = dropped_labels(model, batch, draws.drop)
        return table_loss(model, batch.x, draws.t, draws.noise, draws.u, cond)

    def preview(self, model: TableDenoiser, spec: ModelSpec, path: Path, device: torch.device) -> Path | None:
        """No picture during training (`rediffuse sample` writes rows, `rediffuse eval` the figures)."""
        return None
