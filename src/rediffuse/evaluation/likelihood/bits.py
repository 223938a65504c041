"""Bits per dimension of 8-bit data under a continuous model, by uniform dequantisation
(Theis et al. 2016; Ho et al. 2019, Flow++; Song et al. 2021, appendix D.2).

Derivation. An image is a vector k of D integers in {0, ..., 255}. A density p_Y on y in [0, 256)^D defines
the discrete model P(k) = int_{[0,1)^D} p_Y(k + u) du, and by Jensen's inequality, for u ~ U[0,1)^D,

    -log P(k) <= E_u[-log p_Y(k + u)].

The model's density p_X lives on the data range [-1, 1): x = (k + u) / 128 - 1, an affine map with
|dx/dy| = 2/256 per dimension, so log p_Y(y) = log p_X(x) + log|J| with log|J| = -D ln 128. Hence

    bits/dim = -(log p_X(x) + log|J|) / (D ln 2) = -log p_X(x) / (D ln 2) + 7,

the standard number on the integer scale (the "+ 8" of papers that map to [0, 1) instead: the same value).
A model uniform on [-1, 1]^D gives log p_X = -D ln 2 and exactly 8 bits/dim. Each sample uses one draw of u,
so it is an unbiased estimate of the bound, whose expectation is >= -log2 P(k) / D >= 0; a single draw can
dip below 0 only where the model puts density above 1 on the integer scale within one bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rediffuse.samplers.common import Denoiser
from .ode import ode_likelihood

LEVELS = 256


@dataclass(frozen=True)
class BitsPerDim:
    """Per-sample terms of the dequantised bits/dim: log p_X (nats), log|J|, NLL (nats), bits/dim; the NFE."""

    log_prob: Tensor  # log p_X(x) of the dequantised x in [-1, 1), nats
    log_jacobian: float  # log|dx/dy| = -D ln 128, the same for every sample
    nll_nats: Tensor  # -(log_prob + log_jacobian): NLL on the integer scale, nats
    bits_per_dim: Tensor  # nll_nats / (D ln 2)
    nfe: int = 0

    def summary(self) -> dict[str, float]:
        """Batch means (and the standard error of bits/dim) as floats."""
        return {**mean_and_stderr(self.bits_per_dim, "bits_per_dim"), "nll_nats": float(self.nll_nats.mean()),
                "log_prob": float(self.log_prob.mean()), "log_jacobian": self.log_jacobian, "nfe": float(self.nfe)}


def mean_and_stderr(values: Tensor, name: str) -> dict[str, float]:
    """{name: the mean, name_stderr: its standard error} of per-sample values."""
    n = values.numel()
    stderr = float(values.std()) / math.sqrt(n) if n > 1 else float("nan")
    return {name: float(values.mean()), f"{name}_stderr": stderr}


def to_levels(images: Tensor) -> Tensor:
    """Integer levels k in {0..255}: from integer images, or from floats k/127.5 - 1 in [-1, 1]."""
    if not images.is_floating_point():
        levels = images.long()
    else:
        scaled = (images.to(torch.promote_types(images.dtype, torch.float32)) + 1) * 127.5
        levels = scaled.round()
        if (scaled - levels).abs().max() > 0.1:
            raise ValueError("float images must be 8-bit values scaled as k / 127.5 - 1 (the loaders' range)")
        levels = levels.long()
    if levels.min() < 0 or levels.max() >= LEVELS:
        raise ValueError("8-bit levels must lie in 0..255")
    return levels


def dequantize(levels: Tensor, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, float]:
    """(x = (k + u) / 128 - 1 with u ~ U[0,1), log|dx/dk| per sample = -D ln 128)."""
    u = torch.rand(levels.shape, generator=generator, dtype=dtype, device=levels.device)
    dim = levels[0].numel()
    return (levels.to(dtype) + u) * (2 / LEVELS) - 1, dim * math.log(2 / LEVELS)


def bits_from_log_prob(log_prob: Tensor, log_jacobian: float, dim: int, nfe: int = 0) -> BitsPerDim:
    """The bits/dim breakdown from log p_X of dequantised data and the map's log-Jacobian."""
    nll = -(log_prob + log_jacobian)
    return BitsPerDim(log_prob, log_jacobian, nll, nll / (dim * math.log(2)), nfe)


def bits_per_dim(denoiser: Denoiser, images: Tensor, sigma_min: float, sigma_max: float, *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 **ode_options) -> BitsPerDim:
    """Dequantised bits/dim of 8-bit images (uint8, or k/127.5 - 1) under the probability-flow ODE model.

    The model density is log p_{sigma_min} from `ode_likelihood` (keyword options passed on); `generator` draws
    the dequantisation noise and then any Hutchinson probes.
    """
    x, log_jacobian = dequantize(to_levels(images), generator, dtype)
    result = ode_likelihood(denoiser, x, sigma_min, sigma_max, generator=generator, **ode_options)
    return bits_from_log_prob(result.log_prob, log_jacobian, x[0].numel(), result.nfe)
