"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer", arXiv:2104.09864).

Each pair of channels (j, j + d/2) of a query or key at position m is rotated by the angle m * theta_j with
theta_j = base^(-2j / d), so <R(m) q, R(n) k> is a function of q, k and m - n alone: attention sees relative
positions only. The pairs are the two halves of the head dimension (the GPT-NeoX layout), one of the
equivalent channel pairings of the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_tables(length: int, head_dim: int, base: float = 10000.0,
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(cos, sin) of the angles m * theta_j, each [length, head_dim / 2] float32 (computed in float64)."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"rotary positions need an even head dimension, got {head_dim}; change dim or heads")
    theta = base ** (-torch.arange(0, head_dim // 2, dtype=torch.float64) * 2 / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * theta[None, :]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [..., L, d] at positions 0..L-1 by the tables' first L rows (a norm-preserving map)."""
    length, half = x.shape[-2], x.shape[-1] // 2
    cos, sin = cos[:length].to(x.dtype), sin[:length].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
