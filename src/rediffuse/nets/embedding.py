"""Noise-level embeddings shared by all networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style [cos, sin] features of a noise input, shape [B] -> [B, dim].

    Frequencies run geometrically from 1 down to ``1 / max_period``, so the features separate small
    inputs (``ln(sigma) / 4`` in about [-2, 2]) through the fast channels and large ones (a DDPM index
    in [0, 999] or ``1000 t``) through the slow ones. An odd ``dim`` gets one zero column at the end.
    """
    if dim < 1:
        raise ValueError(f"embedding dim must be >= 1, got {dim}")
    c_noise = torch.as_tensor(c_noise)
    if c_noise.ndim == 0:
        c_noise = c_noise.reshape(1)
    if c_noise.ndim != 1:
        raise ValueError(f"c_noise must be a scalar or 1-D [B], got shape {tuple(c_noise.shape)}")
    dtype = c_noise.dtype if c_noise.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=c_noise.device, dtype=dtype) * (-math.log(max_period) / max(half, 1))
    )
    args = c_noise.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class NoiseEmbedding(nn.Module):
    """Learned embedding of the noise input: sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, out_dim: int, freq_dim: int | None = None, max_period: float = 10000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim or out_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(self.freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        """Embed ``c_noise`` [B] (or a scalar) into [B, out_dim]."""
        feats = sinusoidal_embedding(c_noise, self.freq_dim, self.max_period)
        return self.mlp(feats.to(self.mlp[0].weight))
