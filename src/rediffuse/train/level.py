"""After a log-mel audio run trains: clips drawn the way the run recommends, and the waveform gain that brings
their geometric-mean RMS and peak to the training clips' (issue 41). The level a model's clips come out at moves
with the sampler (more fresh noise, quieter) and with the training seed, so each run measures its own; the mean of
the logs of n clips' levels has a standard error of about 1.15 / sqrt(n) on FSDD (3.6% at 1,000 clips)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

import torch
from torch import nn

from rediffuse import modalities
from rediffuse.audio.codec import MelCodec, codec_from_config
from rediffuse.audio.levels import geometric_levels
from rediffuse.core.spec import ModelSpec
from rediffuse.objectives.consistency import run_grid
from rediffuse.samplers.request import SamplingRequest
from rediffuse.recommended import choose

SEED = 1 << 20  # the calibration's draws start here, apart from the seeds `sample` and `eval` use by default
BATCH = 100


def with_codec(spec: ModelSpec, codec: MelCodec) -> ModelSpec:
    """spec with its data's codec replaced."""
    return spec.replace(data=dataclasses.replace(spec.data, codec=codec.config()))


def calibrated(spec: Any, model_of: Callable[[], nn.Module], config: Any, device: torch.device) -> Any:
    """spec with its codec's gain fitted to `config.level_clips` clips drawn by the model (`model_of()`) with the
    run's recommended sampling (every class in turn); unchanged for a run without a codec, without a reference
    level, or with no clips (and for an objective whose spec is not a ModelSpec)."""
    audio = isinstance(spec, ModelSpec) and spec.data.kind == "audio"
    codec = codec_from_config(spec.data.codec) if audio else None
    n = int(getattr(config, "level_clips", 0))
    if codec is None or codec.reference is None or n < 1:
        return spec
    codec = dataclasses.replace(codec, gain=1.0)
    spec = with_codec(spec, codec)
    chosen = choose(spec, config.sampling)
    classes = spec.data.num_classes
    request = SamplingRequest(n=n, sampler=chosen.sampler, steps=chosen.steps, seed=SEED + int(config.seed),
                              spacing="default" if chosen.spacing == "tuned" else chosen.spacing,
                              batch_size=min(n, BATCH), labels=None if not classes else torch.arange(n) % classes,
                              guidance=chosen.guidance, device=device, eta=chosen.eta)
    tell = bool(getattr(config, "progress", False))
    if tell:
        print(f"level: drawing {n} clips ({chosen.describe()}) to fit the waveform gain (level_clips=0 skips it)",
              file=sys.stderr)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        grid = run_grid(spec, request.sampler, request.steps)
        clips = modalities.of(spec).draw(model_of(), spec, request, grid).samples
    fitted = codec.calibrated(geometric_levels(clips))
    if tell:
        print(f"level: gain {fitted.gain:g} brings the clips to the training clips' geometric-mean RMS and peak",
              file=sys.stderr)
    return with_codec(spec, fitted)
