"""Left-to-right sampling of an autoregressive model, with float64 categorical draws and per-sample generators.

From z [B, L] whose first `start` tokens are a fixed prompt, token k = start, ..., L - 1 is drawn from
p(x_k | x_<k) = exp(model(z[:, :k + 1])[:, k]) by inverse CDF in float64 (`samplers.masked.categorical`; the
reason is there). `model(x)` returns log-probabilities [B, k, V] of each position's token given the tokens
before it and never reads x[:, -1], so the placeholder at position k does not matter. Each step recomputes
the prefix (no key-value cache): L - start network calls on prefixes of growing length.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .masked import Generator, categorical, uniforms

CausalModel = Callable[[Tensor], Tensor]


def sample_autoregressive(model: CausalModel, z: Tensor, start: int, *, generator: Generator = None,
                          callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
    """z [B, L] with tokens start..L-1 drawn left to right from model(x) -> log-probs [B, k, V]; the callback
    gets {"i", "k", "z", "log_probs"} after each token (i counts from 0, k is the position drawn)."""
    if z.ndim != 2 or z.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"z must be integer tokens [B, L], got {z.dtype} {tuple(z.shape)}")
    if not 0 <= start <= z.shape[1]:
        raise ValueError(f"start must be in [0, {z.shape[1]}] (the prompt length), got {start}")
    z = z.clone()
    for k in range(start, z.shape[1]):
        log_probs = model(z[:, :k + 1])[:, k]
        u = uniforms((len(z), 1), generator, z.device)[:, 0]
        z = z.clone() if callback is not None else z  # what the callback was given stays a snapshot
        z[:, k] = categorical(torch.softmax(log_probs.to(torch.float64), -1), uniform=u).to(z.dtype)
        if callback is not None:
            callback({"i": k - start, "k": k, "z": z, "log_probs": log_probs})
    return z
