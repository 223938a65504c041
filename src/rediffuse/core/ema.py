"""Exponential moving average of a model's parameters, with the usual warmup of the decay."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """A frozen copy of a model whose parameters track an EMA of the live ones: p_ema <- p_ema + (1-d)(p - p_ema).

    With warmup the decay at (0-based) update `step` is min(decay, (1 + step) / (10 + step)), so early,
    random weights are forgotten quickly. Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used for the update at a (0-based) step."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, skip: Tensor | None = None) -> None:
        """Move the average toward model's current parameters (no host sync); a 0-d `skip` of 1 leaves it."""
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("EMA.update got a model with a different set of parameters")
        rate = 1.0 - self.decay_at(step)
        weight = rate if skip is None else (1 - skip.to(ema_params[0].dtype)) * rate
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged parameters and buffers, by name."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the average saved by `state_dict`."""
        self.module.load_state_dict(state)
