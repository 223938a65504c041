"""Tables: rows of numbers and categories drawn by one mixed-type diffusion, written as CSV with the training
file's column names, kinds and categories."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rediffuse.data.table_codec import TableCodec
from rediffuse.data.table_types import Table as Rows
from rediffuse.data.tables import write_csv
from rediffuse.errors import UsageError
from rediffuse.keys import opt
from rediffuse.modalities.base import Drawn, Extras, Modality, refuse_suffix
from rediffuse.samplers import generation
from rediffuse.samplers.masked import categorical, uniforms
from rediffuse.samplers.request import Grid, OnStep, SamplingRequest, Step
from rediffuse.samplers.table import sample_table

DEFAULT_STEPS = 50


@dataclass
class TableKeys:
    """The keys of tabular data."""

    columns: str | None = opt(None, "tables: column kinds, e.g. 'age:int,zip:cat,id:drop' (num, int, cat, "
                                    "bool, drop); the rest inferred")
    target: str | None = opt(None, "tables: the target column (the class of a --conditional run)")
    table_mask_power: float = opt(1.0, "tables: category cells are masked with probability t^p at time t (1: "
                                       "linear, as MDLM; above 1 categories stay clean longer than numbers)")


class Table(Modality):
    """Rows of a CSV file or a bundled table."""

    name = "table"
    a_run = "a table run"
    keys = TableKeys
    default_n = 1000
    eval_metrics = ("table",)  # every table metric at once (`evaluation.tables.report`)
    eval_report = "table"
    edit_route = "cells"

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """The MLP over columns."""
        return "table-mlp"

    def default_out(self, run_dir: Path) -> Path:
        """RUN/samples.csv."""
        return run_dir / "samples.csv"

    def check_out(self, out: Path) -> None:
        """A .csv path."""
        refuse_suffix(out, (".csv",), self.a_run)

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """The CSV."""
        return [out]

    def check_request(self, spec: Any, request: SamplingRequest, trajectory: Path | None) -> None:
        """UsageError for Gaussian and text options, and for classes a run cannot take."""
        if request.sampler is not None or request.spacing != "default":
            raise UsageError("--sampler and --spacing are for points, image and audio runs; a table run takes "
                             "--steps")
        if any(getattr(request, name) is not None for name in ("length", "prompt", "infill")):
            raise UsageError("--length, --prompt and --infill are for text runs; drop them for a table run")
        if trajectory is not None:
            raise UsageError("--trajectory is not available for a table run; drop it")
        classes = spec.data.num_classes
        if classes is None and (request.labels is not None or request.guidance != 1.0):
            raise UsageError("--class and --guidance need a conditional table run (train with --conditional "
                             "--target COLUMN)")
        if request.labels is not None and classes is not None:
            labels = torch.as_tensor(request.labels).reshape(-1)
            if int(labels.min()) < 0 or int(labels.max()) >= classes or len(labels) not in (1, request.n):
                raise UsageError(f"--class must be one class or {request.n} classes in 0..{classes - 1}")

    def draw(self, model: nn.Module, spec: Any, request: SamplingRequest, grid: Grid,
             on_step: OnStep | None = None, progress: Callable[[int], None] | None = None,
             world: generation.Ranks | None = None) -> Drawn:
        """The request's rows (x in the model's space); row i from its (seed, i) generator, a conditional run's
        classes from the training frequencies unless given."""
        codec = TableCodec.from_dict(spec.table)
        steps = request.steps or DEFAULT_STEPS
        null = spec.data.num_classes
        rows, labels = [], []
        with torch.no_grad():
            for first in range(0, request.n, request.batch_size):
                idx = range(first, min(request.n, first + request.batch_size))
                gens = generation.sample_generators(request.seed, idx, request.device)
                cond = self._labels(request, codec, idx, gens)
                callback = None if on_step is None else _steps_to(on_step, first)
                x = sample_table(model, len(idx), steps, generator=gens, cond=cond, guidance=request.guidance,
                                 null=null, device=request.device, callback=callback)
                rows.append(x.cpu())
                labels.append(None if cond is None else cond.cpu())
                if progress is not None:
                    progress(len(idx))
        out = torch.cat(rows)
        return Drawn(out, None if labels[0] is None else torch.cat(labels), settings={"steps": steps})

    def _labels(self, request: SamplingRequest, codec: TableCodec, idx: range, gens: list[torch.Generator]
                ) -> Tensor | None:
        """The classes of rows idx: as asked, or drawn from the training frequencies (None: unconditional)."""
        if not codec.conditional:
            return None
        if request.labels is not None:
            labels = torch.as_tensor(request.labels).long().reshape(-1)
            labels = labels.expand(request.n) if len(labels) == 1 else labels
            return labels[idx.start: idx.stop].to(request.device)
        prior = torch.tensor(codec.prior, dtype=torch.float64, device=request.device)
        u = uniforms((len(idx), 1), gens, request.device)[:, 0]
        return categorical(prior.expand(len(idx), -1), uniform=u)

    def impute(self, model: nn.Module, spec: Any, rows: Rows, empty: dict[str, np.ndarray],
               request: SamplingRequest) -> Rows:
        """Each row's empty cells drawn from the model given its other cells, request.n times per row (rows
        repeated in order); the given cells kept as they are. A conditional run's empty target is drawn from the
        training frequencies, a given one conditions the row."""
        codec = TableCodec.from_dict(spec.table)
        x, labels = codec.encode(rows)
        columns = [c.name for c in codec.numbers] + [name for name, _ in codec.categories if "#" not in name]
        columns += [c.name for c in codec.numbers if c.missing]  # a number's flag is redrawn with the number
        missing = torch.from_numpy(np.stack([empty[name] for name in columns], 1))
        per = request.n
        x, missing = x.repeat_interleave(per, 0), missing.repeat_interleave(per, 0)
        target = spec.table["schema"]["target"] if codec.conditional else None
        open_label = None if target is None else torch.from_numpy(empty[target]).repeat_interleave(per, 0)
        labels = None if labels is None else labels.repeat_interleave(per, 0)
        out, drawn_labels = [], []
        with torch.no_grad():
            for first in range(0, len(x), request.batch_size):
                idx = range(first, min(len(x), first + request.batch_size))
                gens = generation.sample_generators(request.seed, idx, request.device)
                cond = None
                if labels is not None:
                    prior = self._labels(dataclasses.replace(request, labels=None, n=len(x)), codec, idx, gens)
                    cond = torch.where(open_label[first: idx.stop].to(prior.device), prior,
                                       labels[first: idx.stop].to(prior.device))
                out.append(sample_table(model, len(idx), request.steps or DEFAULT_STEPS, generator=gens, cond=cond,
                                        guidance=request.guidance, null=spec.data.num_classes,
                                        known=x[first: idx.stop], missing=missing[first: idx.stop],
                                        device=request.device).cpu())
                drawn_labels.append(None if cond is None else cond.cpu())
        filled = codec.decode(torch.cat(out), None if labels is None else torch.cat(drawn_labels))
        kept = {name: np.repeat(v, per, 0) for name, v in rows.values.items()}
        open_cells = {name: np.repeat(e, per, 0) for name, e in empty.items()}
        return Rows(rows.schema, {name: np.where(open_cells[name], filled[name], kept[name])
                                  for name in rows.schema.names})

    def write(self, out: Path, drawn: Drawn, spec: Any, extras: Extras) -> list[Path]:
        """The rows as a CSV with the training file's names, kinds and categories."""
        write_csv(decoded(spec, drawn), out)
        return [out]


def _steps_to(on_step: OnStep, first: int) -> Callable[[dict[str, Any]], None]:
    """The table sampler's callback giving each step to on_step (level: the time t)."""
    return lambda info: on_step(Step(info["i"], float(info["t"]), info["x"], info["denoised"], first))


def decoded(spec: Any, drawn: Drawn) -> Rows:
    """A draw's rows as a data Table."""
    return TableCodec.from_dict(spec.table).decode(drawn.samples, drawn.labels)
