"""How a config key is declared where it lives (`opt`: a default and a help text) and checked (`need`).

`rediffuse.config.TrainConfig` is one flat namespace of keys (one flag each, one TOML table), assembled from the
key groups that the objectives (`objectives.gaussian.GaussianKeys`, ...) and the kinds of data
(`modalities.audio.AudioKeys`, ...) declare beside the code that reads them.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from rediffuse.errors import ConfigError


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text (shown by the CLI)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def need(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def need_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    """ConfigError naming the first of these keys that is not a positive integer."""
    for name in names:
        value = getattr(config, name)
        need(isinstance(value, int) and value >= 1,
             f"{name} must be a positive integer, got {value!r}")
