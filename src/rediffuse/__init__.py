"""rediffuse: diffusion models as one denoiser D(x, sigma); schedules, training, fast samplers, evaluation.

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
    "tuning", "evaluation", "cli",
)


def __getattr__(name: str) -> ModuleType:
    """Import a subpackage on first access (`rediffuse.samplers`, ...)."""
    if name in SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])


__all__ = ["__version__", *SUBMODULES]
