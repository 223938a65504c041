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


class ConditionEmbedding(nn.Module):
    """Noise embedding plus an optional class embedding with a null class; returns SiLU(sum) [B, out_dim].

    Labels ``num_classes``, ``-1`` or ``cond=None`` select the learned null class (classifier-free guidance).
    """

    def __init__(self, out_dim: int, freq_dim: int | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.noise_emb = NoiseEmbedding(out_dim, freq_dim=freq_dim)
        self.class_emb = nn.Embedding(num_classes + 1, out_dim) if num_classes else None

    def forward(self, c_noise: Tensor | float, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Embed a noise input [B] (or a scalar) and labels [B] (or None) for a batch of ``batch``."""
        c = torch.as_tensor(c_noise, device=device)
        if c.ndim == 0:
            c = c.expand(batch)
        if c.shape != (batch,):
            raise ValueError(f"c_noise must be a scalar or shape [{batch}], got {tuple(c.shape)}")
        emb = self.noise_emb(c)
        if self.class_emb is None:
            if cond is not None:
                raise ValueError("this network has no num_classes; pass cond=None")
        else:
            null = self.num_classes
            labels = torch.full((batch,), null, device=device) if cond is None else cond.to(device).long()
            labels = torch.where(labels < 0, null, labels).expand(batch)
            emb = emb + self.class_emb(labels)
        return nn.functional.silu(emb)
