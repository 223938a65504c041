"""What the kinds of data with a Gaussian route (points, images, audio) share: one draw through
`samplers.generation.generate`, guided when asked, streamed step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch import nn

from rediffuse.errors import UsageError
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.modalities.base import Drawn, Modality
from rediffuse.samplers import generation
from rediffuse.samplers.request import Grid, OnStep, SamplingRequest, Step

TEXT_ONLY = ("length", "prompt", "infill")


class GaussianModality(Modality):
    """A kind of data drawn from one denoiser D(x, sigma[, class]) by the samplers."""

    def check_request(self, spec: dict[str, Any], request: SamplingRequest, trajectory: Path | None) -> None:
        """UsageError for the text-only options."""
        if any(getattr(request, name) is not None for name in TEXT_ONLY):
            raise UsageError(f"--length, --prompt and --infill are for text runs; drop them for a {self.name} run")

    def draw(self, model: nn.Module, spec: dict[str, Any], request: SamplingRequest, grid: Grid,
             on_step: OnStep | None = None, progress: Callable[[int], None] | None = None,
             world: generation.Ranks | None = None) -> Drawn:
        """The request's samples: per-sample generators, the guided denoiser when guidance != 1, the grid."""
        denoiser = model if request.guidance == 1.0 else cfg_denoiser(model, request.guidance)
        callback = None if on_step is None else _steps_to(on_step, request.batch_size)
        x = generation.generate(denoiser, model.schedule, spec.data.shape, n=request.n,
                                sampler=request.sampler or "heun", steps=request.steps or 20,
                                spacing=request.spacing, seed=request.seed, batch_size=request.batch_size,
                                cond=request.labels, device=request.device, sigmas=grid.sigmas, plan=grid.plan,
                                callback=callback, progress=progress, world=world, **grid.options)
        samples = self.deliver(spec.data, generation.require_finite(x.cpu()))
        return Drawn(samples, request.labels)


def _steps_to(on_step: OnStep, batch_size: int) -> Callable[[dict[str, Any]], None]:
    """A sampler callback giving each record to on_step as a Step (the batch found by counting step 0s)."""
    batches = [-1]

    def callback(info: dict[str, Any]) -> None:
        if info["i"] == 0:
            batches[0] += 1
        on_step(Step(info["i"], float(info["sigma"]), info["x"], info["denoised"], batches[0] * batch_size))

    return callback
