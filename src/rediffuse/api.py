"""The Python API: `fit` a model on a tensor, a Dataset or a data spec; `load` a run; `from_pretrained` a folder.

    import torch, rediffuse
    run = rediffuse.fit((images, labels), net="unet", conditional=True, steps=2000)   # [N, C, H, W] in [-1, 1]
    x = run.sample(16, cond=3, steps=18, seed=0)                                        # as `rediffuse sample`
    run.denoiser.save_pretrained("my-model")                                           # config.json + safetensors
    same = rediffuse.from_pretrained("my-model").sample(16, cond=3, steps=18, seed=0)   # the same numbers

A `Run.sample` call gives the numbers `rediffuse sample RUN` writes with the same settings and seed: images and
clips clamped to [-1, 1] (a log-mel audio run's clips decoded by Griffin-Lim), points as drawn.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from rediffuse import distributed
from rediffuse.distributed import pick_device
from rediffuse.config import TrainConfig
from rediffuse.data.sources import describe, from_python
from rediffuse.denoisers import Denoiser
from rediffuse.drawing import as_delivered, draw_setup, sample_labels, sampler_and_steps
from rediffuse.errors import ConfigError, UsageError
from rediffuse.presets import preset
from rediffuse.runs import load_model, read_pretrained
from rediffuse.samplers.generation import require_finite
from rediffuse.train import train


@dataclass
class Run:
    """A trained model (a run folder or a pretrained folder): its denoiser, training config and model spec."""

    path: Path
    denoiser: Denoiser
    config: TrainConfig
    spec: dict[str, Any]

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a conditional model (None for an unconditional one)."""
        return self.spec["data"].get("num_classes")

    def sample(self, n: int, cond: int | Sequence[int] | Tensor | None = None, sampler: str | None = None,
               steps: int | None = None, guidance: float = 1.0, seed: int = 0, spacing: str = "default",
               batch_size: int = 1000, device: str | torch.device = "auto") -> Tensor:
        """n samples [n, ...] on the CPU: labels `cond` (one class for all, one per sample, or every class in
        turn when None for a conditional model), `guidance` > 1 for classifier-free guidance."""
        if self.spec["data"]["kind"] == "text":
            raise UsageError("Run.sample draws from Gaussian runs; sample a text run with `rediffuse sample RUN`")
        labels = sample_labels(n, cond, self.num_classes, guidance)
        sampler, steps = sampler_and_steps(self.spec, sampler, steps)
        device = pick_device(str(device))
        denoiser, options = draw_setup(self.spec, self.denoiser.to(device), n=n, sampler=sampler, steps=steps,
                                       spacing=spacing, seed=seed, batch_size=batch_size, cond=labels,
                                       device=device, guidance=guidance, run_dir=self.path)
        x = distributed.generate(denoiser, self.denoiser.schedule, self.spec["data"]["shape"], **options)
        return as_delivered(self.spec["data"], require_finite(x.cpu()))


def load(path: str | Path, ema: bool = True, device: str | torch.device = "auto") -> Run:
    """A run folder (its newest complete checkpoint), a checkpoint folder or a pretrained folder as a Run."""
    model, spec, config = load_model(path, ema=ema, device=pick_device(str(device)))
    if not isinstance(model, Denoiser):
        model = None  # a text run: its model is not a denoiser (sample it with `rediffuse sample`)
    return Run(Path(path), model, config, spec)


def from_pretrained(path: str | Path, device: str | torch.device = "auto") -> Run:
    """A `save_pretrained` folder (config.json + model.safetensors) as a Run; no code runs from the files."""
    read_pretrained(path)  # a one-line error for a folder that is not one
    return load(path, device=device)


def fit(data: Any, out: str | Path | None = None, *, callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
        resume: bool = False, **config: Any) -> Run:
    """Train a model on data (a tensor [N, ...], a (tensor, labels) pair, a Dataset, a DataLoader or a data spec
    string) with the CLI's config keys (net=, steps=, minutes=, batch_size=, preset=, ...); the trained Run.

    The run goes to `out` (default: a new temporary folder); each log record goes to every callback.
    """
    values: dict[str, Any] = preset(config.pop("preset")) if "preset" in config else {}
    values.update(config)
    values["out"] = str(out) if out is not None else tempfile.mkdtemp(prefix="rediffuse-run-")
    given = None
    if isinstance(data, str):
        values["data"] = data
    else:
        if isinstance(data, torch.utils.data.DataLoader) and "batch_size" not in config and data.batch_size:
            values["batch_size"] = int(data.batch_size)
        if values.get("audio_representation", "waveform") != "waveform":
            raise ConfigError("audio_representation 'mel' reads audio files (fsdd:PATH, audio:PATH); for clips in "
                              "memory encode them with rediffuse.audio_codec.MelCodec and fit the images")
        given = from_python(data, rate=int(values.get("sample_rate", 8000)))
        values["data"] = describe(given)
    train(TrainConfig.from_dict(values), resume=resume, data=given, callbacks=callbacks)
    return load(values["out"])
