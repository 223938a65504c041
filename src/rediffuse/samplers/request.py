"""The values of one draw from a model: what is asked (`SamplingRequest`), how a Gaussian draw's noise levels
are laid out (`Grid`), and one step of the reverse process as it streams (`Step`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .common import Plan


@dataclass(frozen=True, eq=False)
class SamplingRequest:
    """One draw: n samples, sample i from its own (seed, i) generator, in batches of batch_size on device.

    Gaussian runs read sampler, steps (None: the run's defaults), spacing ('tuned': the run's saved plan),
    labels (one class per sample, or None), guidance and eta; text runs read steps, order and the template
    (prompt, or infill with its blank character, and length).
    """

    n: int
    sampler: str | None = None
    steps: int | None = None
    spacing: str = "default"
    seed: int = 0
    batch_size: int = 1000
    labels: Tensor | None = None
    guidance: float = 1.0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    eta: float | None = None  # the fresh-noise scale of ddim, euler-ancestral, dpmpp-2m-sde (None: theirs)
    order: str = "random"
    prompt: str | None = None
    infill: str | None = None
    blank: str = "_"
    length: int | None = None


EDIT_METHODS = ("smc", "replace", "reconstruct", "repaint", "sdedit")


@dataclass(frozen=True, eq=False)
class EditRequest:
    """How to edit inputs x [N, ...] (in the model's data space): redraw the `missing` part (True where to
    draw; broadcast over x) by `method` (smc: `particles` per sample, `twist`ed resampling, and for a conditional
    model given no class, particles spread over the classes (None: 4, or one per class); repaint: `jump` and
    `resample`), or (sdedit) redraw all of x from the level of `strength` in (0, 1]. The draw itself (sampler,
    steps, seed, labels, guidance, device, batch size) is the SamplingRequest beside it."""

    x: Tensor
    missing: Tensor | None = None
    method: str = "smc"
    strength: float = 1.0
    particles: int | None = None
    jump: int = 10
    resample: int = 10
    twist: bool = True
    marginal: bool = True


@dataclass(frozen=True, eq=False)
class Grid:
    """A Gaussian draw's levels: a tuned plan, an explicit sigma grid (with the sampler's own options, such as
    consistency sampling's sigma_min), or (when both are None) the schedule's grid of `steps` at `spacing`."""

    plan: Plan | None = None
    sigmas: Tensor | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Step:
    """One step of the reverse process for the batch starting at sample `first`: the step's index, the level
    the state `x` is at afterwards (sigma for Gaussian runs, the masking level for text) and the model's
    estimate of the clean data (D(x, sigma); for text the tokens with every mask filled by its likeliest
    token). Gaussian steps give the state before the step and its level, as the samplers' callbacks do."""

    index: int
    level: float
    x: Tensor
    estimate: Tensor
    first: int = 0


OnStep = Callable[[Step], None]
