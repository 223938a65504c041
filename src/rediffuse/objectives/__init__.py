"""Objectives: what a run learns, by name (`TrainConfig.objective`); see `base.Objective` for the protocol.
Each declares its config keys (`GaussianKeys`, `MaskedKeys`, `ConsistencyKeys`) beside the code that reads them."""

from __future__ import annotations

from typing import Callable

from rediffuse.errors import ConfigError
from rediffuse.objectives.autoregressive import Autoregressive, CausalLM
from rediffuse.objectives.block import Block, BlockLM
from rediffuse.objectives.consistency import Consistency
from rediffuse.objectives.base import Batch, Config, Draws, NoDraws, Objective, StepDraws, StepGenerators
from rediffuse.objectives.gaussian import Gaussian
from rediffuse.objectives.masked import Masked, MaskedLM
from rediffuse.objectives.table import TableObjective

OBJECTIVES: dict[str, Callable[[Config], Objective]] = {"gaussian": Gaussian, "masked": Masked,
                                                           "autoregressive": Autoregressive, "block": Block,
                                                           "consistency": Consistency, "table": TableObjective}


def get(config: Config) -> Objective:
    """The objective a config names, built from it (ConfigError for an unknown name)."""
    if config.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {config.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[config.objective](config)


def validate(config: Config) -> None:
    """Raise ConfigError naming the first invalid value: the objective's keys, then the data's and the loop's
    (`TrainConfig.check`)."""
    get(config).check()
    config.check()


__all__ = ["OBJECTIVES", "Autoregressive", "Batch", "Block", "BlockLM", "CausalLM", "Consistency", "Draws", "Gaussian",
           "Masked", "MaskedLM", "NoDraws", "Objective", "StepDraws", "StepGenerators", "TableObjective", "get",
           "validate"]
