"""Left-to-right sampling of an autoregressive model, with float64 categorical draws and per-sample generators.

From z [B, L] whose first `start` tokens are a fixed prompt, token k = start, ..., L - 1 is drawn from
p(x_k | x_<k) by inverse CDF in float64 (`samplers.masked.categorical`; the reason is there).

With `context` (a model with `step(tokens, cache)`, as `objectives.autoregressive.CausalLM`), a key-value cache
holds BOS and the tokens so far, and each new token costs one network call on that token alone. When the cache
would outgrow the training context, it is rebuilt from BOS and the latest context // 2 tokens at positions from 0
(training windows begin anywhere in the text with BOS), so sequences may be longer than the context. Without it,
`model(x)` returns log-probabilities [B, k, V] of each position's token given the tokens before it and each step
recomputes the whole prefix (L - start calls on prefixes of growing length, at most the context).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from rediffuse.core.kv_cache import KVCache

from .masked import Generator, categorical, uniforms

CausalModel = Callable[[Tensor], Tensor]


def sample_autoregressive(model: CausalModel, z: Tensor, start: int, *, generator: Generator = None,
                          callback: Callable[[dict[str, Any]], None] | None = None,
                          context: int | None = None) -> Tensor:
    """z [B, L] with tokens start..L-1 drawn left to right; the callback gets {"i", "k", "z", "log_probs"} after
    each token (i counts from 0, k is the position drawn). `context` switches on the key-value cache."""
    if z.ndim != 2 or z.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"z must be integer tokens [B, L], got {z.dtype} {tuple(z.shape)}")
    if not 0 <= start <= z.shape[1]:
        raise ValueError(f"start must be in [0, {z.shape[1]}] (the prompt length), got {start}")
    if context is not None and context < 2:
        raise ValueError(f"the context must hold BOS and a token, got {context}")
    z = z.clone()
    cache: KVCache | None = None
    for k in range(start, z.shape[1]):
        if context is None:
            log_probs = model(z[:, :k + 1])[:, k]
        elif cache is None or len(cache) >= context:
            cache = KVCache()
            log_probs = model.step(z[:, max(0, k - context // 2):k], cache, bos=True)
        else:
            log_probs = model.step(z[:, k - 1:k], cache)
        u = uniforms((len(z), 1), generator, z.device)[:, 0]
        z = z.clone() if callback is not None else z  # what the callback was given stays a snapshot
        z[:, k] = categorical(torch.softmax(log_probs.to(torch.float64), -1), uniform=u).to(z.dtype)
        if callback is not None:
            callback({"i": k - start, "k": k, "z": z, "log_probs": log_probs})
    return z
