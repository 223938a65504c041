"""Networks over a table's columns, F(x, c_noise, cond) for rows of numbers and category codes: a residual MLP
over the concatenated columns, and a transformer over the columns as tokens.

x [B, numbers + categories] holds the numbers' (preconditioned) noisy values, then each categorical column's
code, its mask id being that column's number of categories. Codes go through one embedding table (columns at
offsets), numbers through a linear map; the output is the numbers' F [B, numbers] followed by every
categorical column's logits over its own categories, concatenated.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from rediffuse.nets.embedding import ConditionEmbedding
from rediffuse.nets.mlp import ResidualBlock


class TableMLP(nn.Module):
    """Noise- and class-conditioned residual MLP over numbers and category codes (module docstring)."""

    registry_name = "table-mlp"

    def __init__(self, numbers: int, cardinalities: Sequence[int], hidden: int = 256, depth: int = 4,
                 emb_dim: int = 128, token_dim: int = 16, num_classes: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if numbers < 0 or min([hidden, depth, emb_dim, token_dim, *cardinalities], default=1) < 1:
            raise ValueError("hidden, depth, emb_dim, token_dim and every cardinality must be >= 1")
        self._config: dict[str, Any] = dict(numbers=numbers, cardinalities=list(cardinalities), hidden=hidden,
                                            depth=depth, emb_dim=emb_dim, token_dim=token_dim,
                                            num_classes=num_classes, dropout=float(dropout))
        self.numbers, self.cardinalities, self.num_classes = numbers, list(cardinalities), num_classes
        offsets = torch.tensor([0, *self.cardinalities], dtype=torch.long).cumsum(0)
        # each column has its categories and a mask token: ids card_j + 1 per column
        self.register_buffer("offsets", offsets[:-1] + torch.arange(len(self.cardinalities)), persistent=False)
        self.tokens = nn.Embedding(int(sum(self.cardinalities)) + len(self.cardinalities), token_dim)
        self.embed = ConditionEmbedding(emb_dim, freq_dim=None, num_classes=num_classes)
        self.inp = nn.Linear(numbers + token_dim * len(self.cardinalities), hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, numbers + int(sum(self.cardinalities)))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TableMLP:
        """Build a model from `config()` output."""
        return cls(**config)

    def forward(self, x: Tensor, c_noise: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Map x [B, numbers + categories], noise input [B] (or a scalar) and labels [B] to [B, numbers + sum of
        cardinalities]."""
        width = self.numbers + len(self.cardinalities)
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"TableMLP expects x of shape [B, {width}], got {tuple(x.shape)}")
        codes = x[:, self.numbers:].round().long() + self.offsets
        h = torch.cat([x[:, : self.numbers], self.tokens(codes).flatten(1)], 1)
        emb = self.embed(c_noise, cond, x.shape[0], x.device)
        h = self.inp(h)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(self.norm_out(h))


class TableTransformer(nn.Module):
    """A transformer over a row's columns as tokens: each number's value times its column's vector, each category's
    embedding, plus a column embedding; the noise level and class enter as one more token; each column's token
    gives its output (a number's F, a category's logits over its own categories)."""

    registry_name = "table-transformer"

    def __init__(self, numbers: int, cardinalities: Sequence[int], dim: int = 64, depth: int = 3, heads: int = 4,
                 emb_dim: int = 128, num_classes: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if numbers < 0 or min([dim, depth, heads, emb_dim, *cardinalities], default=1) < 1 or dim % heads:
            raise ValueError("dim, depth, heads, emb_dim and every cardinality must be >= 1, heads dividing dim")
        self._config: dict[str, Any] = dict(numbers=numbers, cardinalities=list(cardinalities), dim=dim,
                                            depth=depth, heads=heads, emb_dim=emb_dim, num_classes=num_classes,
                                            dropout=float(dropout))
        self.numbers, self.cardinalities, self.num_classes = numbers, list(cardinalities), num_classes
        columns = numbers + len(self.cardinalities)
        offsets = torch.tensor([0, *self.cardinalities], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets[:-1] + torch.arange(len(self.cardinalities)), persistent=False)
        self.tokens = nn.Embedding(int(sum(self.cardinalities)) + len(self.cardinalities), dim)
        self.value = nn.Parameter(torch.randn(numbers, dim) / dim**0.5)
        self.column = nn.Parameter(torch.randn(columns, dim) * 0.02)
        self.embed = ConditionEmbedding(emb_dim, freq_dim=None, num_classes=num_classes)
        self.condition = nn.Linear(emb_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.number_head = nn.Parameter(torch.zeros(numbers, dim))
        self.category_heads = nn.ModuleList(nn.Linear(dim, k) for k in self.cardinalities)
        for head in self.category_heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TableTransformer:
        """Build a model from `config()` output."""
        return cls(**config)

    def forward(self, x: Tensor, c_noise: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Map x [B, numbers + categories], noise input [B] (or a scalar) and labels [B] to [B, numbers + sum of
        cardinalities]."""
        width = self.numbers + len(self.cardinalities)
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"TableTransformer expects x of shape [B, {width}], got {tuple(x.shape)}")
        numbers = x[:, : self.numbers, None] * self.value
        codes = self.tokens(x[:, self.numbers:].round().long() + self.offsets)
        emb = self.condition(self.embed(c_noise, cond, x.shape[0], x.device))[:, None]
        h = self.trunk(torch.cat([emb, torch.cat([numbers, codes], 1) + self.column], 1))
        h = self.norm(h[:, 1:])
        out = [(h[:, : self.numbers] * self.number_head).sum(-1)]
        out += [head(h[:, self.numbers + j]) for j, head in enumerate(self.category_heads)]
        return torch.cat(out, 1)
