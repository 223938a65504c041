"""Drawing from a trained model: `Run` (opened once; `sample`, `sample_steps`), `load`, and the streaming helper."""

from __future__ import annotations

from rediffuse.samplers.request import Grid, SamplingRequest, Step
from rediffuse.sampling.run import Run, labels_for, load

__all__ = ["Grid", "Run", "SamplingRequest", "Step", "labels_for", "load"]
