"""Block-by-block sampling of a block-diffusion model (BD3-LM, Arriola et al. 2025) with a key-value cache.

The template z [B, L] (masks where to fill; a prompt or any kept tokens stay) is cut into blocks of L' tokens,
the last one padded with masks. Block b is filled by the masked sampler (`samplers.masked.sample_masked`: T
ancestral or confidence-ordered steps, float64 draws) whose model reads the block through the cache of every
finished block. A finished block joins the cache in the same pass as the next block's first step
(`denoise_after`), so each block costs only the steps that changed it (one pass less per block than caching
it on its own: at L' = 4 and a step per token, 4 calls per block instead of 5). A template's tokens after
block b are not seen while b is filled: block diffusion conditions on the past only.

Past the training context (`context` tokens) the cache is rebuilt from the latest finished blocks, about half a
context of them, at positions from 0, so every block is filled with a view like the training windows' (they
start anywhere in the text). The autoregressive sampler does the same with its token-by-token cache.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from rediffuse.core.kv_cache import KVCache
from rediffuse.samplers.masked import Generator, sample_masked


class BlockModel(Protocol):
    """What the sampler needs of a block model (`objectives.block.BlockLM`)."""

    block: int
    mask_id: int
    schedule: Any

    def denoise(self, z: Tensor, cache: KVCache) -> Tensor: ...

    def denoise_after(self, done: Tensor, z: Tensor, cache: KVCache) -> Tensor: ...


def restart_point(done: int, block: int, context: int) -> int:
    """Where a rebuilt cache starts when `done` tokens are finished and one more block must fit the context: the
    latest whole blocks of about half a context (at least one block's room is left)."""
    if block > context:
        raise ValueError(f"a block of {block} tokens does not fit the context of {context}")
    keep = max(0, (context // 2) // block * block)
    return max(0, done - keep)


def sample_blocks(model: BlockModel, z: Tensor, steps: int | None = None, *, context: int,
                  generator: Generator = None, order: str = "random",
                  callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
    """Fill the masks of z [B, L] block by block, `steps` per block (default L': one token per step).

    The callback gets {"i", "block", "t", "s", "z", "estimate"} after each step: z the whole sequence so far,
    estimate it with the current block's masks at their likeliest tokens.
    """
    block, mask_id = model.block, model.mask_id
    steps = block if steps is None else steps
    batch, length = z.shape
    pad = -length % block
    x = torch.cat([z, torch.full((batch, pad), mask_id, dtype=z.dtype, device=z.device)], 1)
    cache, start, counter = KVCache(), 0, [0]
    cached = 0  # x[:, :cached] is in the cache (from `start`); later finished blocks join it with the next call
    for b in range(x.shape[1] // block):
        first = b * block
        if first - start + block > context:
            start, cache = restart_point(first, block, context), KVCache()
            cached = start

        def denoise(part: Tensor, t: Tensor) -> Tensor:
            nonlocal cached
            if cached == first:
                return model.denoise(part, cache)
            done, cached = x[:, cached:first], first
            return model.denoise_after(done, part, cache)

        hook = None if callback is None else _block_callback(callback, x, first, b, mask_id, counter)
        x[:, first:first + block] = sample_masked(denoise, x[:, first:first + block], steps,
                                                  schedule=model.schedule, mask_id=mask_id, generator=generator,
                                                  order=order, time_agnostic=True, callback=hook)
    return x[:, :length]


def _block_callback(callback: Callable[[dict[str, Any]], None], x: Tensor, first: int, b: int, mask_id: int,
                    counter: list[int]) -> Callable[[dict[str, Any]], None]:
    """The masked sampler's per-step callback for one block, reported over the whole sequence."""
    def hook(info: dict[str, Any]) -> None:
        part = info["z"]
        whole = x.clone()
        whole[:, first:first + part.shape[1]] = part
        estimate = whole.clone()
        if info["log_probs"].numel():
            guess = torch.where(part == mask_id, info["log_probs"].argmax(-1), part)
            estimate[:, first:first + part.shape[1]] = guess
        callback({"i": counter[0], "block": b, "t": info["t"], "s": info["s"], "z": whole, "estimate": estimate})
        counter[0] += 1
    return hook
