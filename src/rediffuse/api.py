"""The Python API: `fit` a model on a tensor, a Dataset or a data spec; `load` a run; `from_pretrained` a folder.

    import torch, rediffuse
    run = rediffuse.fit((images, labels), net="unet", conditional=True, steps=2000)   # [N, C, H, W] in [-1, 1]
    x = run.sample(16, cond=3, steps=18, seed=0)                                        # as `rediffuse sample`
    run.denoiser.save_pretrained("my-model")                                           # config.json + safetensors
    same = rediffuse.from_pretrained("my-model").sample(16, cond=3, steps=18, seed=0)   # the same numbers

A `Run.sample` call gives the numbers `rediffuse sample RUN` writes with the same settings and seed: images and
clips clamped to [-1, 1] (a log-mel audio run's clips decoded by Griffin-Lim), points as drawn, text as token
ids. `Run.sample_steps` streams the reverse process (`rediffuse.sampling.run`). Labels given to `fit` train a
class-conditional model unless `conditional=False` says otherwise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rediffuse.config import TrainConfig
from rediffuse.data.sources import describe, from_python
from rediffuse.errors import ConfigError
from rediffuse.presets import preset
from rediffuse.runs import read_pretrained
from rediffuse.sampling.run import Run, load
from rediffuse.train import train


def from_pretrained(path: str | Path, device: str | torch.device = "auto") -> Run:
    """A `save_pretrained` folder (config.json + model.safetensors) as a Run; no code runs from the files."""
    read_pretrained(path)  # a one-line error for a folder that is not one
    return load(path, device=device)


def fit(data: Any, out: str | Path | None = None, *, callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
        resume: bool = False, **config: Any) -> Run:
    """Train a model on data (a tensor [N, ...], a (tensor, labels) pair, a Dataset, a DataLoader or a data spec
    string) with the CLI's config keys (net=, steps=, minutes=, batch_size=, preset=, ...); the trained Run.

    The run goes to `out` (default: a new temporary folder); each log record goes to every callback. Data with
    labels trains a class-conditional model unless conditional=False.
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
            raise ConfigError(f"audio_representation {values['audio_representation']!r} reads audio files "
                              "(fsdd:PATH, audio:PATH); for clips in memory encode them with "
                              "rediffuse.audio.codec.MelCodec and fit the images")
        given = from_python(data, rate=int(values.get("sample_rate", 8000)))
        values["data"] = describe(given)
        if "conditional" not in values and given.labels is not None:
            values["conditional"] = True  # labels given: a model that uses them, unless told otherwise
    train(TrainConfig.from_dict(values), resume=resume, data=given, callbacks=callbacks)
    return load(values["out"])


__all__ = ["Run", "fit", "from_pretrained", "load"]
