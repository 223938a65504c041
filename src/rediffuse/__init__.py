"""rediffuse: diffusion models as one denoiser D(x, sigma); schedules, training, fast samplers, evaluation.

`rediffuse.fit`, `rediffuse.load` and `rediffuse.from_pretrained` are the Python API (`rediffuse.api`).
`import rediffuse` loads nothing heavy: each subpackage (`rediffuse.schedules`, `rediffuse.samplers`, ...) is
imported on first attribute access (PEP 562), so the command line and small scripts start fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.2.0.dev0"

# The modules and packages reachable as attributes, lowest layer first (docs/architecture.md).
SUBMODULES = (
    "errors", "io", "spectral", "schedules", "denoisers", "analytic", "losses", "consistency", "guidance", "ema", "presets", "foreign",
    "checkpoint", "viz", "viz_text", "viz_audio", "distributed", "data", "nets", "samplers", "objectives", "config", "runs", "train",
    "tuning", "evaluation", "api", "cli",
)
API = ("fit", "load", "from_pretrained", "Run")  # the Python API (rediffuse.api), imported on first use


def __getattr__(name: str) -> ModuleType:
    """Import a subpackage on first access (`rediffuse.samplers`, ...)."""
    if name in SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in API:
        value = getattr(importlib.import_module(f"{__name__}.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES, *API])


__all__ = ["__version__", *API, *SUBMODULES]
