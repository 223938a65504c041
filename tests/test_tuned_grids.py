"""Tuned step grids: fitted on one batch of noise, they beat the standard grids on fresh noise."""

import pytest
import torch

from rediffuse import analytic, schedules
from rediffuse import tuned_grids as tg

f64 = torch.float64


def test_tuned_grid_beats_karras_on_held_out_noise(tmp_path):
    m = analytic.preset("ring8")
    d = m.denoiser()
    g = torch.Generator().manual_seed(0)
    tune_x, test_x = (80 * torch.randn(128, 2, generator=g, dtype=f64) for _ in range(2))
    grid, before, after = tg.optimize_grid(d, tune_x, "euler", 8, 0.002, 80.0, max_evals=200)
    assert after < before
    assert grid[0] == 80.0 and grid[-1] == 0 and (grid[1:] < grid[:-1]).all() and len(grid) == 9
    ref = tg.reference_solution(d, test_x, 80.0, 0.002)
    best_standard = min(tg.rms_error(d, test_x, ref, schedules.get("edm").sigmas(8, s), "euler")
                        for s in ("karras", "logsnr", "uniform"))
    tuned = tg.rms_error(d, test_x, ref, grid, "euler")
    print(f"held-out RMS error: best standard grid {best_standard:.4f}, tuned {tuned:.4f}")
    assert tuned < 0.75 * best_standard
    tg.save_grid(tmp_path, "euler", grid, {"error": tuned})
    assert torch.equal(tg.load_grid(tmp_path, "euler", 8), grid)
    with pytest.raises(FileNotFoundError, match="tune-grid"):
        tg.load_grid(tmp_path, "heun", 8)


def test_reference_solution_is_accurate():
    m = analytic.preset("ring8")
    x = 80 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    a = tg.reference_solution(m.denoiser(), x, 80.0, 0.002, steps=256)
    b = tg.reference_solution(m.denoiser(), x, 80.0, 0.002, steps=512)
    assert (a - b).abs().max() < 1e-3


def test_grid_parameter_round_trip():
    grid = schedules.karras_sigmas(6, 0.01, 50.0)
    theta = tg.params_from_grid(torch.cat([grid, torch.zeros(1, dtype=f64)]), 0.005)
    back = tg.grid_from_params(theta, 0.005, 50.0)
    assert torch.allclose(back[:-1], grid, rtol=1e-4) and back[-1] == 0
    assert tg.steps_for_nfe("heun", 10) == 5 and tg.steps_for_nfe("euler", 10) == 10


def test_tuning_noise_is_disjoint_from_evaluation_noise():
    from rediffuse import sampling
    from rediffuse.tuned_grids import tuning_noise

    n, shape = 64, (3,)
    tune = tuning_noise(1, n, shape)
    assert tune.shape == (n, 3) and torch.equal(tune, tuning_noise(1, n, shape))  # deterministic
    for seed in (0, 1):
        gens = sampling.sample_generators(seed, range(n))
        evaluation = torch.stack([torch.randn(shape, generator=g) for g in gens])
        assert torch.cdist(tune, evaluation).min() > 1e-6  # no starting point is shared
