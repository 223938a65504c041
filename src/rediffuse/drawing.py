"""One draw from a Gaussian run, shared by `rediffuse sample` and `Run.sample`: per-sample labels, the guided
denoiser with its sampler options, and the samples as the user receives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse.audio_codec import to_waveforms
from rediffuse.errors import UsageError
from rediffuse.guidance import cfg_denoiser
from rediffuse.objectives.consistency import default_sampler, run_sampling
from rediffuse.tuning.grids import load_plan

DEFAULT_STEPS = 20


def sample_labels(n: int, cond: Any, num_classes: int | None, guidance: float,
                  flags: tuple[str, str, str] = ("cond", "guidance", "fit with conditional=True")) -> Tensor | None:
    """Labels [n]: one class for all, one per sample, or every class in turn when cond is None; UsageError (naming
    `flags`: the class and guidance names and how to get a conditional model) for labels a model cannot take."""
    name, scale, fix = flags
    if num_classes is None:
        if cond is not None or guidance != 1.0:
            raise UsageError(f"{name} and {scale} need a class-conditional model ({fix})")
        return None
    if cond is None:
        return torch.arange(n) % num_classes
    if isinstance(cond, int):
        if not 0 <= cond < num_classes:
            raise UsageError(f"{name} must be in 0..{num_classes - 1}, got {cond}")
        return torch.full((n,), cond, dtype=torch.long)
    labels = torch.as_tensor(cond).long().reshape(-1)
    if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise UsageError(f"{name} must be one class or {n} classes in 0..{num_classes - 1}, got {cond!r}")
    return labels


def sampler_and_steps(spec: dict[str, Any], sampler: str | None, steps: int | None) -> tuple[str, int]:
    """The sampler and step count to use: the given ones, else the run's defaults."""
    default, default_steps = default_sampler(spec, DEFAULT_STEPS)
    return sampler or default, default_steps if steps is None else steps


def draw_setup(spec: dict[str, Any], denoiser: nn.Module, *, n: int, sampler: str, steps: int, spacing: str,
               seed: int, batch_size: int, cond: Tensor | None, device: torch.device, guidance: float,
               run_dir: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(the denoiser, guided when guidance != 1, and the `generate` options) for one draw; `spacing='tuned'`
    reads the plan saved in run_dir."""
    if guidance != 1.0:
        denoiser = cfg_denoiser(denoiser, guidance)
    options = dict(n=n, sampler=sampler, steps=steps, spacing=spacing, seed=seed, batch_size=batch_size,
                   cond=cond, device=device)
    options.update(run_sampling(spec, sampler, steps))  # a consistency run's few-step grid
    if spacing == "tuned":
        if run_dir is None:
            raise UsageError("spacing='tuned' needs a run folder with plans from `rediffuse tune-grid`")
        options.update(spacing="default", plan=load_plan(run_dir, sampler, steps))
    return denoiser, options


def as_delivered(data_info: dict[str, Any], x: Tensor) -> Tensor:
    """Samples as written to files: images and clips clamped to [-1, 1] (log-mel clips decoded first), points
    as drawn."""
    if data_info["kind"] == "audio":
        return to_waveforms(data_info, x).clamp(-1, 1)
    return x if data_info["kind"] == "points" else x.clamp(-1, 1)
