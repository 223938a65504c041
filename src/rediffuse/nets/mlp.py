"""A residual MLP denoiser network F(x, c_noise, cond) for points [B, dim], optionally class-conditional."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rediffuse.nets.embedding import ConditionEmbedding


class ResidualBlock(nn.Module):
    """x + Linear(SiLU(Linear(SiLU(LayerNorm(x) * (1 + scale) + shift)))), scale and shift from the embedding."""

    def __init__(self, width: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)  # the scale-shift is its affine
        self.emb = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Map x [B, width] and the activated embedding [B, emb_dim] to [B, width]."""
        scale, shift = self.emb(emb).chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm(x), 1 + scale))
        h = self.dropout(F.silu(self.fc1(h)))
        return x + self.fc2(h)


class MLP(nn.Module):
    """Noise-conditioned residual MLP ``F(x, c_noise, cond)`` for points [B, dim].

    The noise input may be a DDPM index (0..999), ``1000 t`` or ``ln(sigma) / 4``: its sinusoidal features
    span periods from 2 pi to 2 pi * 10^4. Class labels ``num_classes`` (or -1, or ``cond=None``) select the
    learned null class used by classifier-free guidance. The output layer starts at zero.
    """

    registry_name = "mlp"  # its name in NETS and in saved configs

    def __init__(self, dim: int, hidden: int = 256, depth: int = 4, emb_dim: int = 128,
                 num_classes: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1 or emb_dim < 1:
            raise ValueError("dim, hidden, depth and emb_dim must all be >= 1")
        self._config: dict[str, Any] = dict(dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim,
                                            num_classes=num_classes, dropout=float(dropout))
        self.dim, self.num_classes = dim, num_classes
        self.embed = ConditionEmbedding(emb_dim, freq_dim=None, num_classes=num_classes)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return dict(self._config)

    @classmethod
    def data_config(cls, shape: Sequence[int], num_classes: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The config of an MLP for examples of `shape` with kwargs (ValueError unless points [d])."""
        if len(shape) != 1:
            raise ValueError(f"net 'mlp' needs points [N, d], but the examples have shape {list(shape)}; use "
                             "--net unet for images")
        return {**kwargs, "dim": shape[0], "num_classes": num_classes}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MLP":
        """Build a model from ``config()`` output."""
        return cls(**config)

    def forward(self, x: Tensor, c_noise: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Map x [B, dim], noise input [B] (or a scalar) and labels [B] to [B, dim]."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        emb = self.embed(c_noise, cond, x.shape[0], x.device)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.norm_out(h))
