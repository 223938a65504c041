"""Objectives: what a run learns, by name (`TrainConfig.objective`); see `base.Objective` for the protocol."""

from __future__ import annotations

from typing import Callable

from rediffuse import config as config_keys
from rediffuse.config import TrainConfig
from rediffuse.errors import ConfigError
from rediffuse.objectives.autoregressive import Autoregressive, CausalLM
from rediffuse.objectives.consistency import Consistency
from rediffuse.objectives.base import Batch, Draws, NoDraws, Objective, StepDraws, StepGenerators
from rediffuse.objectives.gaussian import Gaussian
from rediffuse.objectives.masked import Masked, MaskedLM

OBJECTIVES: dict[str, Callable[[TrainConfig], Objective]] = {"gaussian": Gaussian, "masked": Masked,
                                                           "autoregressive": Autoregressive,
                                                           "consistency": Consistency}


def get(config: TrainConfig) -> Objective:
    """The objective a config names, built from it (ConfigError for an unknown name)."""
    if config.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {config.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[config.objective](config)


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid value: the objective's keys, then the loop's."""
    get(config).check()
    config_keys.check(config)


__all__ = ["OBJECTIVES", "Autoregressive", "Batch", "CausalLM", "Consistency", "Draws", "Gaussian", "Masked",
           "MaskedLM", "NoDraws", "Objective", "StepDraws", "StepGenerators", "get", "validate"]
