"""rediffuse: diffusion models as one denoiser D(x, sigma); schedules, training, fast samplers, evaluation.

`rediffuse.fit`, `rediffuse.load` and `rediffuse.from_pretrained` are the Python API (`rediffuse.api`).
`import rediffuse` loads nothing heavy: each subpackage (`rediffuse.core.schedules`, `rediffuse.samplers`, ...) is
imported on first attribute access (PEP 562), so the command line and small scripts start fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.2.0.dev0"

# The modules and packages reachable as attributes, lowest layer first (docs/architecture.md).
SUBMODULES = (
    "errors", "io", "core", "truth", "audio", "presets", "foreign", "checkpoint", "viz", "distributed", "data",
    "nets", "samplers", "modalities", "objectives", "config", "runs", "recommended", "train", "tuning", "evaluation",
    "sampling", "api", "cli",
)
# Where the modules of version 0.2 went (rediffuse.schedules is rediffuse.core.schedules): the old attribute
# paths keep working for one release; import the new paths in new code.
MOVED = {
    "schedules": "core.schedules", "denoisers": "core.denoisers", "losses": "core.losses",
    "guidance": "core.guidance", "ema": "core.ema", "masked": "core.masking",
    "consistency": "core.consistency_models", "analytic": "truth.analytic", "markov": "truth.markov",
    "spectral": "audio.spectral", "audio_codec": "audio.codec", "viz_text": "viz.text", "viz_audio": "viz.audio",
}
API = ("fit", "load", "from_pretrained", "Run")  # the Python API (rediffuse.api), imported on first use


def __getattr__(name: str) -> ModuleType:
    """Import a subpackage (or a moved module, by its old name) on first access (`rediffuse.samplers`, ...)."""
    if name in SUBMODULES or name in MOVED:
        module = importlib.import_module(f"{__name__}.{MOVED.get(name, name)}")
        globals()[name] = module
        return module
    if name in API:
        value = getattr(importlib.import_module(f"{__name__}.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES, *MOVED, *API])


__all__ = ["__version__", *API, *SUBMODULES]
