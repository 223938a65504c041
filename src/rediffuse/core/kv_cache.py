"""A key-value cache: the attention keys and values of the tokens a transformer has already read, per layer.

Sampling left to right (the autoregressive model token by token, block diffusion block by block) feeds only the new
tokens; they attend to the cached ones, and their own keys and values join the cache when it is recording. Past
the training context a sampler starts a new cache from the latest tokens (a sliding window over cached keys would
give deeper layers a view no training window had).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class KVCache:
    """Per-layer keys and values [B, heads, P, head_dim] of the P cached tokens, and the next free position."""

    recording: bool = True
    next_position: int = 0
    keep: int | None = None  # when recording, only the first `keep` tokens of a read join the cache (None: all)
    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of cached tokens."""
        return 0 if not self.keys else int(self.keys[0].shape[2])

    def layer(self, i: int) -> tuple[Tensor, Tensor] | None:
        """Layer i's cached (keys, values), or None before the first token."""
        return (self.keys[i], self.values[i]) if i in self.keys else None

    def add(self, i: int, keys: Tensor, values: Tensor) -> None:
        """Append new tokens' keys and values (the first `keep` of them) to layer i."""
        if self.keep is not None:
            keys, values = keys[:, :, : self.keep], values[:, :, : self.keep]
        if i in self.keys:
            keys, values = torch.cat([self.keys[i], keys], 2), torch.cat([self.values[i], values], 2)
        self.keys[i], self.values[i] = keys, values

    def advance(self, positions: Tensor) -> None:
        """Record that the tokens at `positions` (the first `keep` of them) were read: the next token goes after the
        last of them."""
        positions = positions if self.keep is None else positions[: self.keep]
        self.next_position = max(self.next_position, int(positions.max()) + 1)
