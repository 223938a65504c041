"""What an objective is: the protocol between the training loop and what it learns.

The loop draws each step's global batch, asks the objective for that batch's randomness (from per-step
generators, so every choice is a function of (seed, step)), keeps this rank's slice of both, and minimises
the mean of the objective's per-sample loss. It never looks inside a batch, a draw or a model spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rediffuse.config import TrainConfig
from rediffuse.data.dataset import Data

Draws = dict[str, Tensor]  # a step's randomness: tensors whose first dimension is the batch's


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

    def spec(self, data: Data) -> dict[str, Any]:
        """The JSON description of the model to train on data (`build` and `model` rebuild from it)."""

    def build(self, spec: dict[str, Any]) -> nn.Module:
        """The raw network a spec describes (freshly initialised from torch's global RNG)."""

    def initialise(self, net: nn.Module, spec: dict[str, Any]) -> None:
        """Optional: set a new run's starting weights in place, after `build` (absent: the fresh init is the start)."""

    def model(self, spec: dict[str, Any], net: nn.Module) -> nn.Module:
        """The model `loss` and sampling call, around a network (the live one, possibly under DDP, or the EMA)."""

    def draw(self, model: nn.Module, batch: Batch, generators: StepGenerators) -> Draws:
        """The randomness of one step for the whole global batch (every rank draws the same)."""

    def loss(self, model: nn.Module, batch: Batch, draws: Draws) -> Tensor:
        """The per-sample loss [B] of a batch under its draws."""

    def preview(self, model: nn.Module, spec: dict[str, Any], path: Path, device: torch.device) -> Path | None:
        """Write a picture of samples of model to path (None where this data has no picture)."""


class Configured:
    """The common start of an objective: built from its run's TrainConfig, kept as `config`."""

    name = ""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def initialise(self, net: nn.Module, spec: dict[str, Any]) -> None:
        """Keep the fresh initialisation of `build`."""
