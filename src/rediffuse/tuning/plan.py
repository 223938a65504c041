"""A sampling plan: one value for how to sample a model (sampler, sigma grid, teleport, warm start, coefficients).

`SamplingPlan.run` is the one place where the research options become the samplers' generic hooks: a teleport
takes the grid's first step in closed form (`GaussianFlow.teleport`, with its fitted jump if it carries one); with
`warm_start` a multistep sampler's history starts from the Gaussian (`history=`), and without it iPNDM's and LMS's
first network step solves the Gaussian's part of the model exactly (`first_step=`); learned coefficients go to iPNDM.
A plan is saved as JSON (grid, options, coefficients, metadata) with its Gaussian fit beside it as safetensors, so
loading one runs no code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from rediffuse import samplers
from rediffuse.io import atomic_write_json
from rediffuse.samplers.common import Callback, Generator, steps
from rediffuse.core.schedules import Schedule
from rediffuse.tuning.teleport import GaussianFlow, teleported

f64 = torch.float64
# The keys of a plan's JSON entry; every other key is metadata (a tuning error, for one).
FIELDS = ("sampler", "sigmas", "teleport", "warm_start", "coefficients")
COEFFICIENT_SAMPLERS = {"ipndm"}  # samplers that take learned per-step `coefficients`


def check_options(sampler: str, teleport: GaussianFlow | None, warm_start: bool, coefficients: bool) -> None:
    """Raise a one-line ValueError if these research options do not go together."""
    if warm_start and (teleport is None or sampler not in samplers.WARM_STARTED):
        raise ValueError(f"warm_start needs a teleport and a multistep sampler "
                         f"({', '.join(sorted(samplers.WARM_STARTED))}); got {sampler} "
                         f"{'with' if teleport else 'without'} a teleport")
    if coefficients and sampler not in COEFFICIENT_SAMPLERS:
        raise ValueError(f"learned coefficients are iPNDM's; use sampler 'ipndm', not {sampler!r}")


@dataclass(frozen=True, eq=False)
class SamplingPlan:
    """How to sample: `sampler` on the float64 grid `sigmas` (ending in 0), with the optional research options."""

    sampler: str
    sigmas: Tensor
    teleport: GaussianFlow | None = None  # takes the step sigmas[0] -> sigmas[1] in closed form
    warm_start: bool = False  # with a teleport: the multistep history starts from the Gaussian
    coefficients: Tensor | None = None  # iPNDM's per-step coefficients [steps, 4] (`rediffuse.tuning.coefficients`)
    meta: Mapping[str, Any] = field(default_factory=dict)  # how it was tuned (errors before and after)

    def __post_init__(self) -> None:
        samplers.get(self.sampler)  # a clear error for an unknown name
        sigmas = torch.as_tensor(self.sigmas, dtype=f64).detach().cpu()
        object.__setattr__(self, "sigmas", sigmas)
        if sigmas.ndim != 1 or len(sigmas) < 2 or float(sigmas[-1]) != 0:
            raise ValueError(f"a plan's sigmas must be a 1-D grid ending in 0, got {sigmas.tolist()}; "
                             f"append the 0 (`schedules.append_zero`)")
        check_options(self.sampler, self.teleport, self.warm_start, self.coefficients is not None)

    @classmethod
    def standard(cls, schedule: Schedule, sampler: str, steps: int, spacing: str = "default") -> "SamplingPlan":
        """A plain plan: the sampler on the schedule's `steps`-step grid of this spacing."""
        return cls(sampler, schedule.sigmas(steps, spacing))

    @property
    def steps(self) -> int:
        """Sampler steps: the grid's, less the teleported first step (which costs nothing)."""
        return len(self.sigmas) - 1 - (self.teleport is not None)

    @property
    def nfe(self) -> int:
        """Network evaluations per sample (the teleport costs none; Heun and 2S spend one on the step to 0)."""
        grid = self.sigmas[1:] if self.teleport is not None else self.sigmas
        two = self.sampler in samplers.TWO_EVAL_SAMPLERS
        return sum(2 if two and sigma_next > 0 else 1
                   for _, _, sigma_next in steps(grid, skip_repeats=self.sampler in samplers.WARM_STARTED))

    def hooks(self) -> dict[str, Any]:
        """The sampler options this plan's research options become (after the teleport's jump)."""
        options: dict[str, Any] = {}
        if self.teleport is not None and self.warm_start:
            options["history"] = self.teleport.history
        elif self.teleport is not None and self.sampler in samplers.GAUSSIAN_FIRST_STEP:
            options["first_step"] = self.teleport.exp_euler
        if self.coefficients is not None:
            options["coefficients"] = self.coefficients
        return options

    def run(self, denoiser: Callable[..., Tensor], noise: Tensor, *, cond: Tensor | None = None,
            generator: Generator = None, callback: Callback | None = None) -> Tensor:
        """Samples from `noise` (VE form at sigmas[0]): the teleport's jump, then the sampler with this plan's hooks."""
        x, sigmas = noise, self.sigmas
        if self.teleport is not None:
            x, sigmas = teleported(noise, sigmas, self.teleport)
        return samplers.get(self.sampler)(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback,
                                          **self.hooks())

    def entry(self, teleport_file: str | None = None) -> dict[str, Any]:
        """The plan as a JSON-ready dict (metadata keys beside the fields); the teleport is named by its file."""
        if (self.teleport is None) != (teleport_file is None):
            raise ValueError("name the teleport's safetensors file exactly when the plan has a teleport")
        out: dict[str, Any] = {"sampler": self.sampler, "sigmas": self.sigmas.tolist(), **self.meta}
        if teleport_file is not None:
            out.update(teleport=teleport_file, warm_start=self.warm_start)
        if self.coefficients is not None:
            out["coefficients"] = self.coefficients.detach().cpu().tolist()
        return out

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], folder: str | os.PathLike, sampler: str | None = None
                   ) -> "SamplingPlan":
        """The plan an `entry` describes; its teleport file is read from `folder` (safetensors, no code runs)."""
        name = entry.get("teleport")
        coefficients = entry.get("coefficients")
        return cls(entry.get("sampler", sampler), torch.tensor(entry["sigmas"], dtype=f64),
                   teleport=None if name is None else GaussianFlow.load(Path(folder) / name),
                   warm_start=bool(entry.get("warm_start", False)),
                   coefficients=None if coefficients is None else torch.tensor(coefficients, dtype=f64),
                   meta={k: v for k, v in entry.items() if k not in FIELDS})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan to `path` (.json) and its Gaussian fit, if any, beside it (.teleport.safetensors)."""
        path = Path(path)
        if path.suffix != ".json":
            raise ValueError(f"a plan is saved as .json, got {str(path)!r}; give a path ending in .json")
        name = None
        if self.teleport is not None:
            name = self.teleport.save(path.with_suffix(".teleport.safetensors")).name
        return atomic_write_json(path, self.entry(name))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SamplingPlan":
        """Read a plan written by `save`."""
        path = Path(path)
        return cls.from_entry(json.loads(path.read_text()), path.parent)
