"""What an objective is: the protocol between the training loop and what it learns.

The loop draws each step's global batch, asks the objective for that batch's randomness (from per-step
generators, so every choice is a function of (seed, step)), keeps this rank's slice of both, and minimises
the mean of the objective's per-sample loss. It never looks inside a batch, a draw or a model spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Union

import torch
from torch import Tensor, nn

from rediffuse.core.spec import ModelSpec
from rediffuse.data.dataset import Data


Config = Any  # a run's `rediffuse.config.TrainConfig` (above this layer: it is assembled from the key groups here)


class StepDraws:
    """A step's randomness as a small dataclass of tensors (or None) whose first dimension is the batch's; for
    one release it also reads like the dict it replaces (`draws["sigma"]`, `"drop" in draws`, iteration)."""

    def take(self, index: slice | Tensor) -> "StepDraws":
        """The draws of the examples at index (this rank's slice of the global batch)."""
        return dataclasses.replace(self, **{name: value[index] for name, value in self._set()})

    def _set(self) -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) of every field that is set."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if getattr(self, f.name) is not None:
                yield f.name, getattr(self, f.name)

    def __getitem__(self, name: str) -> Tensor:
        value = getattr(self, name, None)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and getattr(self, name, None) is not None

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._set())

    def __eq__(self, other: object) -> bool:
        """The same names with equal tensors (a dict of them included)."""
        if not isinstance(other, (StepDraws, dict)):
            return NotImplemented
        mine, theirs = dict(self._set()), dict(other._set() if isinstance(other, StepDraws) else other.items())
        return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]  (tensors: no hash)


@dataclass(frozen=True, eq=False)
class NoDraws(StepDraws):
    """The draws of an objective whose loss is deterministic (autoregressive text)."""


Draws = Union[StepDraws, dict[str, Tensor]]  # an objective's own dataclass, or a plain dict (custom objectives)


def take(draws: Draws, index: slice | Tensor) -> Draws:
    """The draws of the examples at index, for either form."""
    if isinstance(draws, StepDraws):
        return draws.take(index)
    return {name: value[index] for name, value in draws.items()}


@dataclass
class Batch:
    """Training examples: x [B, ...] and, when the data has them, labels [B]."""

    x: Tensor
    labels: Tensor | None = None

    def __len__(self) -> int:
        """The number of examples."""
        return len(self.x)

    def __getitem__(self, index: slice | Tensor) -> "Batch":
        """The examples at index (a slice or index tensor along the batch)."""
        return Batch(self.x[index], None if self.labels is None else self.labels[index])


class StepGenerators(Protocol):
    """Named random streams of one training step, each seeded by (seed, step, name)."""

    step: int

    def cpu(self, name: str) -> torch.Generator:
        """A CPU generator for the stream `name` of this step."""

    def device(self, name: str) -> torch.Generator:
        """A generator on the training device for the stream `name` of this step."""


class Objective(Protocol):
    """What a run learns (built from its TrainConfig): the model, the per-sample loss and how to sample it."""

    def check(self) -> None:
        """Raise ConfigError naming the first invalid config value this objective reads."""

    def spec(self, data: Data) -> ModelSpec:
        """The description of the model to train on data (`build` and `model` rebuild from it; a custom
        objective may give its own JSON dict instead)."""

    def build(self, spec: ModelSpec) -> nn.Module:
        """The raw network a spec describes (freshly initialised from torch's global RNG)."""

    def initialise(self, net: nn.Module, spec: ModelSpec) -> None:
        """Optional: set a new run's starting weights in place, after `build` (absent: the fresh init is the start)."""

    def model(self, spec: ModelSpec, net: nn.Module) -> nn.Module:
        """The model `loss` and sampling call, around a network (the live one, possibly under DDP, or the EMA)."""

    def draw(self, model: nn.Module, batch: Batch, generators: StepGenerators) -> Draws:
        """The randomness of one step for the whole global batch (every rank draws the same)."""

    def loss(self, model: nn.Module, batch: Batch, draws: Draws) -> Tensor:
        """The per-sample loss [B] of a batch under its draws."""

    def preview(self, model: nn.Module, spec: ModelSpec, path: Path, device: torch.device) -> Path | None:
        """Write a picture of samples of model to path (None where this data has no picture)."""


class Configured:
    """The common start of an objective: built from its run's TrainConfig, kept as `config`."""

    name = ""

    def __init__(self, config: Config) -> None:
        self.config = config

    def initialise(self, net: nn.Module, spec: ModelSpec) -> None:
        """Keep the fresh initialisation of `build`."""
