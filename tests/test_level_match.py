"""Per-clip level distributions compared on the log scale: gains, spreads and their sampling error."""

from __future__ import annotations

import math

import pytest
import torch

from rediffuse.evaluation.metrics import QUANTILES, clip_peak, clip_rms, level_match


def lognormal(n: int, mu: float, sigma: float, seed: int) -> torch.Tensor:
    """n draws of exp(N(mu, sigma^2)), float64."""
    g = torch.Generator().manual_seed(seed)
    return (mu + sigma * torch.randn(n, generator=g, dtype=torch.float64)).exp()


def test_a_gain_is_a_ratio_a_distance_and_every_quantile():
    real = lognormal(300, -3.5, 1.1, 0)
    m = level_match(1.3 * real, real)
    assert m.ratio == pytest.approx(1.3, rel=1e-12)
    assert m.spread == pytest.approx(1.0, rel=1e-12)
    assert m.distance == pytest.approx(0.3, rel=1e-9)  # every clip moves by the same factor
    assert m.quantiles == pytest.approx((1.3,) * len(QUANTILES), rel=1e-9)
    same = level_match(real, real)
    assert same.ratio == pytest.approx(1.0) and same.distance == pytest.approx(0.0, abs=1e-12)


def test_a_power_of_the_levels_scales_the_spread_and_pivots_at_the_geometric_mean():
    real = lognormal(500, 0.0, 1.0, 1)
    centre = real.log().mean()
    wide = (centre + 1.5 * (real.log() - centre)).exp()  # the same geometric mean, logs 1.5x as spread
    m = level_match(wide, real)
    assert m.ratio == pytest.approx(1.0, rel=1e-9)
    assert m.spread == pytest.approx(1.5, rel=1e-9)
    assert m.quantiles[0] < 1.0 < m.quantiles[-1]  # quiet clips quieter, loud clips louder
    # W1 of logs = 0.5 x the mean absolute deviation of the logs from their mean
    assert m.distance == pytest.approx(math.expm1(0.5 * float((real.log() - centre).abs().mean())), rel=1e-9)


def test_independent_draws_match_their_laws_within_the_stated_error():
    """Over repeated draws the ratio's log scatters with the stated standard error around the true shift, and
    the distance converges to exp(|shift|) - 1 (W1 between equal-width normals is the shift of their means)."""
    logs, ses = [], []
    for seed in range(200):
        m = level_match(lognormal(300, 0.2, 1.15, 2 * seed), lognormal(300, 0.0, 1.08, 2 * seed + 1))
        logs.append(math.log(m.ratio))
        ses.append(m.ratio_se)
    logs_t = torch.tensor(logs)
    assert float(logs_t.mean()) == pytest.approx(0.2, abs=3 * 0.09 / math.sqrt(200))
    assert float(logs_t.std()) == pytest.approx(sum(ses) / len(ses), rel=0.15)
    assert sum(ses) / len(ses) == pytest.approx(math.sqrt((1.15**2 + 1.08**2) / 300), rel=0.05)
    big = level_match(lognormal(20_000, 0.2, 1.0, 7), lognormal(20_000, 0.0, 1.0, 8))
    assert big.distance == pytest.approx(math.expm1(0.2), abs=0.03)
    assert big.spread == pytest.approx(1.0, abs=0.03)


def test_per_clip_levels_of_clips_and_silence():
    t = torch.arange(8000, dtype=torch.float64) / 8000
    tone = 0.5 * torch.sin(2 * math.pi * 200 * t)
    clips = torch.stack([tone, 0.1 * tone, torch.zeros_like(tone)]).unsqueeze(1)
    assert clip_rms(clips).tolist() == pytest.approx([0.5 / math.sqrt(2), 0.05 / math.sqrt(2), 0.0], rel=1e-6)
    assert clip_peak(clips).tolist() == pytest.approx([0.5, 0.05, 0.0], rel=1e-6)
    m = level_match(clip_rms(clips), clip_rms(clips[:2]))  # a silent clip is very quiet, not an error
    assert m.quantiles[0] < 1e-3 and math.isfinite(m.ratio)


def test_real_levels_without_spread_leave_the_spread_ratio_undefined():
    m = level_match(torch.tensor([0.4, 0.6]), torch.tensor([0.5, 0.5]))
    assert m.spread is None and m.to_dict()["spread"] is None and m.ratio == pytest.approx(math.sqrt(0.96))


def test_too_few_clips_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 clips"):
        level_match(torch.ones(1), torch.ones(5))


def test_the_level_error_is_the_largest_miss_in_location_or_width():
    from rediffuse.evaluation.audio_opinion import level_error, level_matches

    real = lognormal(400, -3.5, 1.0, 3).reshape(-1, 1) * torch.linspace(-1, 1, 64).sin()  # RMS and peak scale
    louder = level_matches(1.08 * real, real)
    assert level_error(louder) == pytest.approx(0.08, rel=1e-9)
    centre = real.abs().amax(-1).log().mean()
    logs = real.abs().amax(-1).log()
    wider = real * ((centre + 1.2 * (logs - centre)) - logs).exp()[:, None]  # every clip's logs 1.2x as spread
    assert level_error(level_matches(wider, real)) == pytest.approx(0.2, rel=1e-9)
