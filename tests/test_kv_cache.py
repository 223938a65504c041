"""The transformer's key-value cache: feeding tokens piece by piece through a cache gives the logits of one full
forward pass, for causal models and for blocks over a cached prefix; learned positions stop at max_len."""

from __future__ import annotations

import pytest
import torch

from rediffuse.nets import Transformer
from rediffuse.core.kv_cache import KVCache

TINY = dict(vocab_size=11, dim=16, depth=2, heads=2, max_len=24)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 11, (3, 20), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("pieces", [[1] * 20, [3, 2, 7, 8], [20]])
def test_a_causal_model_fed_through_a_cache_matches_one_pass(tokens, pieces):
    torch.manual_seed(0)
    model = Transformer(**TINY, causal=True).eval()
    whole = model(tokens)
    cache, outs, start = KVCache(), [], 0
    for size in pieces:
        outs.append(model(tokens[:, start:start + size], cache=cache))
        start += size
    assert len(cache) == 20 and cache.next_position == 20
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-5, rtol=1e-5)


def test_a_block_attends_within_itself_and_to_the_cached_prefix(tokens):
    """A bidirectional model given the prefix through a cache and a block unmasked equals a full pass whose mask
    lets the prefix see itself causally by blocks and the block see everything before and within it."""
    torch.manual_seed(0)
    model = Transformer(**TINY).eval()
    block = 4
    owner = torch.arange(20) // block
    mask = owner[:, None] >= owner[None, :]  # block-causal
    whole = model(tokens, mask=mask)
    cache = KVCache()
    for b in range(5):
        part = model(tokens[:, b * block:(b + 1) * block], cache=cache)
        torch.testing.assert_close(part, whole[:, b * block:(b + 1) * block], atol=1e-5, rtol=1e-5)


def test_a_cache_that_does_not_record_leaves_the_prefix_alone(tokens):
    torch.manual_seed(0)
    model = Transformer(**TINY).eval()
    cache = KVCache()
    model(tokens[:, :8], cache=cache)
    cache.recording = False
    first = model(tokens[:, 8:12], cache=cache)
    second = model(tokens[:, 8:12], cache=cache)
    assert len(cache) == 8 and cache.next_position == 8 and torch.equal(first, second)


def test_learned_positions_refuse_to_run_past_max_len(tokens):
    model = Transformer(**{**TINY, "max_len": 8}, positions="learned", causal=True).eval()
    cache = KVCache()
    model(tokens[:, :8], cache=cache)
    with pytest.raises(ValueError, match="exceeds max_len 8"):
        model(tokens[:, 8:9], cache=cache)
