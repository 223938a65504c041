"""Denoiser transforms: classifier-free guidance (Ho & Salimans 2022)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

NULL_LABEL = -1


class CFGDenoiser(nn.Module):
    """D_w(x, sigma, c) = D(x, sigma, null) + w (D(x, sigma, c) - D(x, sigma, null)); w = 1 is D(., c).

    The labels come at call time (as the samplers pass them), so one guided denoiser serves any batch.
    The null label (-1) selects the networks' unconditional class; `cond=None` is the unconditional D.
    """

    def __init__(self, denoiser: Callable[..., Tensor], scale: float, null_label: int = NULL_LABEL) -> None:
        super().__init__()
        self.denoiser, self.scale, self.null_label = denoiser, float(scale), null_label

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            return self.denoiser(x, sigma)
        if self.scale == 1.0:
            return self.denoiser(x, sigma, cond)
        null = torch.full_like(cond, self.null_label)
        if isinstance(sigma, Tensor) and sigma.ndim > 0:
            sigma = torch.cat([sigma, sigma])
        both = self.denoiser(torch.cat([x, x]), sigma, torch.cat([cond, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + self.scale * (conditional - unconditional)


def cfg_denoiser(denoiser: Callable[..., Tensor], scale: float, null_label: int = NULL_LABEL) -> CFGDenoiser:
    """The classifier-free guided version of a class-conditional denoiser (labels given at call time)."""
    return CFGDenoiser(denoiser, scale, null_label)
