"""What the kinds of data with a Gaussian route (points, images, audio) share: one draw through
`samplers.generation.generate`, guided when asked, streamed step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from rediffuse.errors import UsageError
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.modalities.base import Drawn, Modality
from rediffuse import samplers
from rediffuse.samplers import generation
from rediffuse.samplers.inpainting import Reconstruction, Replacement, repaint, smc
from rediffuse.samplers.inversion import edit_grid, noised_to
from rediffuse.samplers.request import EditRequest, Grid, OnStep, SamplingRequest, Step

TEXT_ONLY = ("length", "prompt", "infill")


class GaussianModality(Modality):
    """A kind of data drawn from one denoiser D(x, sigma[, class]) by the samplers."""

    gaussian = True

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
                                callback=callback, progress=progress, world=world, **grid.options,
                                **({} if request.eta is None else {"eta": request.eta}))
        samples = self.deliver(spec.data, generation.require_finite(x.cpu()))
        return Drawn(samples, request.labels)

    def edit(self, model: nn.Module, spec: Any, request: SamplingRequest, edit: EditRequest,
             progress: Callable[[int], None] | None = None, on_step: OnStep | None = None) -> Drawn:
        """The request's inputs (as delivered) edited: the known part kept bit for bit, the rest drawn by
        edit.method in the model's space (`encode`, `model_mask`) and delivered."""
        given = edit.x.to(torch.float32)
        x = self.encode(spec.data, given).to(request.device)
        if tuple(x.shape[1:]) != tuple(spec.data.shape):
            raise UsageError(f"the inputs have shape {list(x.shape[1:])}, the model draws {list(spec.data.shape)}; "
                             "give inputs of the model's shape")
        missing = None if edit.missing is None else \
            self.model_mask(spec.data, edit.missing.bool()).to(request.device).expand_as(x)
        denoiser = model if request.guidance == 1.0 else cfg_denoiser(model, request.guidance)
        sigmas = model.schedule.sigmas(request.steps or 20, request.spacing)
        out = []
        with torch.no_grad():
            for first in range(0, len(x), request.batch_size):
                rows = range(first, min(len(x), first + request.batch_size))
                cond = None if request.labels is None else request.labels[first: rows[-1] + 1].to(request.device)
                gens = generation.sample_generators(request.seed, rows, request.device)
                part = edit_batch(denoiser, model.schedule, edit, x[first: rows[-1] + 1],
                                  None if missing is None else missing[first: rows[-1] + 1], sigmas,
                                  request.sampler or "heun", gens, cond, float(spec.sigma_data),
                                  None if on_step is None else _steps_of_batch(on_step, first),
                                  spec.data.num_classes)
                out.append(part.cpu())
                if progress is not None:
                    progress(len(rows))
        edited = self.deliver(spec.data, generation.require_finite(torch.cat(out), "editing"))
        if edit.missing is not None:  # the known part as given, bit for bit
            edited = torch.where(edit.missing.bool().expand_as(given), edited, given)
        return Drawn(edited, request.labels)


def edit_batch(denoiser: nn.Module, schedule: Any, edit: EditRequest, x: Tensor, missing: Tensor | None,
               sigmas: Tensor, sampler: str, gens: list[torch.Generator], cond: Tensor | None,
               scale: float, callback: Callable | None = None, num_classes: int | None = None) -> Tensor:
    """One batch of an edit (inputs x, their missing masks) with per-sample generators; the sampler's steps go
    to callback (SMC's hold every particle: k rows per input). `scale` is the data's standard deviation, and
    `num_classes` a conditional model's (whose null class, for SMC, means the classes marginalised)."""
    noise = lambda: generation.prior(schedule, float(sigmas[0]), x.shape, gens, x.device, x.dtype)  # noqa: E731
    if edit.method == "sdedit":
        grid = edit_grid(sigmas, edit.strength)
        start = torch.stack([noised_to(row[None], float(grid[0]), [g])[0] for row, g in zip(x, gens)])
        return samplers.sample(denoiser, start, grid, sampler, generator=gens, cond=cond, callback=callback)
    if edit.method == "repaint":
        return repaint(denoiser, noise(), x, missing, sigmas, jump=edit.jump, resample=edit.resample,
                       generator=gens, cond=cond, callback=callback)
    if edit.method == "smc":
        marginal = edit.marginal and num_classes is not None and cond is not None and bool((cond == num_classes).all())
        k = edit.particles or (num_classes if marginal else 4)
        cond = particle_classes(num_classes, k, gens) if marginal else cond
        return smc(denoiser, noise(), x, missing, sigmas, particles=k, generator=gens, cond=cond,
                   callback=callback, twist=scale if edit.twist else None)
    path = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device) for g in gens])
    wrapped = Replacement(denoiser, x, missing, path) if edit.method == "replace" else \
        Reconstruction(denoiser, x, missing, path, scale)
    drawn = samplers.sample(wrapped, noise(), sigmas, sampler, generator=gens, cond=cond, callback=callback)
    return torch.where(missing, drawn, x)


def particle_classes(num_classes: int, particles: int, gens: list[torch.Generator]) -> Tensor:
    """Each sample's particles' classes [N, particles]: the classes in a random order, repeated to fill; each
    particle's class is uniform, so the particles draw from the mixture over classes, p(x) = mean_c p(x | c)."""
    spread = torch.arange(particles) % num_classes
    return torch.stack([torch.randperm(num_classes, generator=g, device=g.device)[spread.to(g.device)]
                        for g in gens])


def _steps_of_batch(on_step: OnStep, first: int) -> Callable[[dict[str, Any]], None]:
    """A sampler callback giving each record of the batch starting at sample `first` to on_step as a Step."""
    return lambda info: on_step(Step(info["i"], float(info["sigma"]), info["x"], info["denoised"], first))


def _steps_to(on_step: OnStep, batch_size: int) -> Callable[[dict[str, Any]], None]:
    """A sampler callback giving each record to on_step as a Step (the batch found by counting step 0s)."""
    batches = [-1]

    def callback(info: dict[str, Any]) -> None:
        if info["i"] == 0:
            batches[0] += 1
        on_step(Step(info["i"], float(info["sigma"]), info["x"], info["denoised"], batches[0] * batch_size))

    return callback
