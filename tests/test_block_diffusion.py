"""Block diffusion's math against exact truth on a Markov chain: the attention mask, the clipped per-block times
and masks, the closed-form block NELBO (= the entropy in continuous time for every L', >= it with T steps), the
Monte Carlo estimate's mean, L' = 1 as the autoregressive likelihood, and the one-pass training view against the
cached block-by-block view of the same transformer."""

from __future__ import annotations

import math

import pytest
import torch

from rediffuse.core import block_diffusion as bd
from rediffuse.core.masking import COSINE, LOG_LINEAR
from rediffuse.nets import Transformer
from rediffuse.core.kv_cache import KVCache
from rediffuse.truth.block_markov import block_nelbo, exact_block_log_probs
from rediffuse.truth.markov import MarkovChain

f64 = torch.float64


@pytest.fixture(scope="module")
def chain():
    return MarkovChain.random(3, 6, seed=1)


def test_the_attention_mask_by_hand():
    m = bd.block_attention_mask(4, 2).int()
    want = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0],   # noisy block 0: itself only
                         [1, 1, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 1, 1, 1, 0, 0],   # noisy block 1: itself and clean block 0
                         [0, 0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 1, 1, 0, 0],   # clean block 0: clean block 0
                         [0, 0, 0, 0, 1, 1, 0, 0],
                         [0, 0, 0, 0, 1, 1, 1, 1],   # clean block 1: clean blocks 0 and 1
                         [0, 0, 0, 0, 1, 1, 1, 1]])
    assert torch.equal(m, want)
    with pytest.raises(ValueError, match="must be >= 1 and divide the sequence length 6"):
        bd.block_attention_mask(6, 4)


def test_block_times_are_stratified_and_clipped():
    t = bd.block_times(8, 4, torch.Generator().manual_seed(0))
    assert t.shape == (8, 4) and t.dtype == f64
    assert torch.equal(torch.sort((t.flatten() * 32).floor()).values, torch.arange(32, dtype=f64))
    clipped = bd.block_times(8, 4, torch.Generator().manual_seed(0), 0.3, 0.8)
    assert torch.allclose(clipped, 0.3 + 0.5 * t) and float(clipped.min()) >= 0.3 and float(clipped.max()) < 0.8
    with pytest.raises(ValueError, match="beta < omega"):
        bd.block_times(2, 2, low=0.8, high=0.3)


def test_each_block_masks_at_its_own_rate_and_clipping_keeps_its_share_in_range():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(20000, 8, dtype=torch.long)
    t = torch.tensor([[0.1, 0.5, 0.9, 1.0]], dtype=f64).expand(20000, 4)
    z = bd.noise_blocks(x, t, 2, LOG_LINEAR, 5, g)
    rates = (z == 5).to(f64).reshape(20000, 4, 2).mean((0, 2))
    assert torch.allclose(rates, t[0], atol=0.01)
    clipped = bd.noise_blocks(torch.zeros(2000, 16, dtype=torch.long), bd.block_times(2000, 4, g, 0.45, 0.95), 4,
                              LOG_LINEAR, 5, g, 0.45, 0.95)
    share = (clipped == 5).to(f64).reshape(2000, 4, 4).mean(-1)
    assert float(share.min()) >= 0.5 and float(share.max()) <= 0.75  # only 2 or 3 of 4 tokens lie in the range


def test_the_closed_form_is_the_entropy_in_continuous_time_and_above_it_in_steps(chain):
    h = chain.entropy()
    for block in (1, 2, 3, 6):
        assert block_nelbo(chain, block) == pytest.approx(h, abs=1e-10)
        bounds = [block_nelbo(chain, block, steps) for steps in (1, 2, 8, 64)]
        if block == 1:
            assert bounds == pytest.approx([h] * 4, abs=1e-10)  # one token per block: nothing drawn jointly
        else:
            assert all(a > b for a, b in zip(bounds, bounds[1:])) and bounds[-1] > h
    assert block_nelbo(chain, 6, 4) == pytest.approx(chain.nelbo(4), abs=1e-10)  # L' = L: the masked model
    assert block_nelbo(chain, 2, 1) < block_nelbo(chain, 3, 1) < block_nelbo(chain, 6, 1)


@pytest.mark.parametrize("block,schedule", [(2, LOG_LINEAR), (3, COSINE), (6, LOG_LINEAR)])
def test_the_monte_carlo_block_nelbo_of_the_exact_denoiser_is_unbiased(chain, block, schedule):
    g = torch.Generator().manual_seed(block)
    n, blocks = 20000, chain.length // block
    x = chain.sample(n, g)
    t = bd.block_times(n, blocks, g)
    z = bd.noise_blocks(x, t, block, schedule, chain.mask_id, g)
    est = bd.block_nelbo(exact_block_log_probs(chain, x, z, block), x, z, t, schedule, chain.mask_id, block)
    est = est * chain.length
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - chain.entropy()) < 4 * se


def test_one_token_blocks_fully_masked_give_the_autoregressive_likelihood(chain):
    x = chain.sample(50, torch.Generator().manual_seed(2))
    t = torch.ones(50, chain.length, dtype=f64)
    z = bd.noise_blocks(x, t, 1, LOG_LINEAR, chain.mask_id)
    assert bool((z == chain.mask_id).all())
    nats = bd.block_nelbo(exact_block_log_probs(chain, x, z, 1), x, z, t, LOG_LINEAR, chain.mask_id, 1)
    torch.testing.assert_close(nats.to(f64) * chain.length, -chain.log_prob(x), atol=1e-6, rtol=0)


def test_the_one_pass_training_view_equals_the_cached_block_by_block_view():
    torch.manual_seed(0)
    model = Transformer(vocab_size=7, dim=16, depth=2, heads=2, max_len=12).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 7, (3, 12), generator=g)
    z = bd.noise_blocks(x, bd.block_times(3, 3, g), 4, LOG_LINEAR, 7, g)
    positions = torch.arange(12).repeat(2)
    trained = model(torch.cat([z, x], 1), positions=positions, mask=bd.block_attention_mask(12, 4))[:, :12]
    cache = KVCache()
    for b in range(3):
        part = slice(4 * b, 4 * b + 4)
        cache.recording = False
        torch.testing.assert_close(model(z[:, part], cache=cache), trained[:, part], atol=1e-5, rtol=1e-5)
        cache.recording = True
        model(x[:, part], cache=cache)
