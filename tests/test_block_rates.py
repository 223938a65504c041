"""Choosing block diffusion's clipped rates by the loss variance, on the exact Markov-chain block denoiser: the
candidate windows, the unclipped window's mean (the entropy), and clipping away t near 0 lowering the variance."""

from __future__ import annotations

import math

import pytest
import torch

from rediffuse.core.masking import LOG_LINEAR
from rediffuse.evaluation.block_rates import loss_variance, lowest_variance, rate_windows
from rediffuse.truth.block_markov import exact_block_log_probs
from rediffuse.truth.markov import MarkovChain


class ExactModel:
    """The chain's exact block denoiser in the one-pass form forward(z, x)."""

    schedule = LOG_LINEAR

    def __init__(self, chain: MarkovChain, block: int) -> None:
        self.chain, self.block, self.mask_id = chain, block, chain.mask_id

    def __call__(self, z, x):
        return exact_block_log_probs(self.chain, x, z, self.block)


def test_candidate_windows_cover_the_widths_on_the_grid():
    windows = rate_windows()
    assert len(windows) == 11 + 9 + 7 + 5 + 3 + 1 and (0.0, 1.0) in windows and (0.45, 0.95) in windows
    assert all(0.0 <= low < high <= 1.0 + 1e-12 and high - low >= 0.5 - 1e-12 for low, high in windows)


def test_the_variance_search_on_the_exact_denoiser():
    chain = MarkovChain.random(3, 6, seed=1)
    x = chain.sample(1000, torch.Generator().manual_seed(0))
    scores = loss_variance(ExactModel(chain, 3), x, [(0.0, 1.0), (0.3, 0.8), (0.5, 1.0)], draws=2)
    full = scores[0]
    se = math.sqrt(full.variance / 2000)
    assert abs(full.mean * chain.length - chain.entropy()) < 4 * se * chain.length  # unclipped: the NELBO
    assert scores[1].variance < full.variance and scores[2].variance < full.variance
    assert lowest_variance(scores) in scores[1:]
    with pytest.raises(ValueError, match="draws >= 2"):
        loss_variance(ExactModel(chain, 3), x, [(0.0, 1.0)], draws=1)
