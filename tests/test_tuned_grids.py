"""Tuned step grids: fitted on one batch of noise, they beat the standard grids on fresh noise."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.samplers import generation as sampling
from rediffuse.tuning import grids as tg
from rediffuse.tuning.plan import SamplingPlan

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
    tg.save_plan(tmp_path, SamplingPlan("euler", grid, meta={"error": tuned}))
    assert torch.equal(tg.load_plan(tmp_path, "euler", 8).sigmas, grid)
    with pytest.raises(FileNotFoundError, match="tune-grid"):
        tg.load_plan(tmp_path, "heun", 8)


def test_reference_solution_is_accurate():
    """The adaptive reference against scipy's DOP853 at rtol 1e-10 on the same ODE, exact denoiser, same noise."""
    m = analytic.preset("ring8")
    x = 80 * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    a = tg.reference_solution(m.denoiser(), x, 80.0, 0.002)

    def rhs(u, y):  # dx/du = x - D(x, e^u), u = log sigma
        z = torch.from_numpy(y).reshape(x.shape)
        return (z - m.denoise(z, math.exp(u))).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(80.0), math.log(0.002)), x.reshape(-1).numpy(), method="DOP853", rtol=1e-10,
                    atol=1e-10)
    b = m.denoise(torch.from_numpy(sol.y[:, -1]).reshape(x.shape), 0.002)
    assert (a - b).abs().max() < 1e-6


def test_grid_parameter_round_trip():
    grid = schedules.karras_sigmas(6, 0.01, 50.0)
    theta = tg.params_from_grid(torch.cat([grid, torch.zeros(1, dtype=f64)]), 0.005)
    back = tg.grid_from_params(theta, 0.005, 50.0)
    assert torch.allclose(back[:-1], grid, rtol=1e-4) and back[-1] == 0
    assert tg.steps_for_nfe("heun", 10) == 5 and tg.steps_for_nfe("euler", 10) == 10


def test_tuning_noise_is_disjoint_from_evaluation_noise():
    n, shape = 64, (3,)
    tune = tg.tuning_noise(1, n, shape)
    assert tune.shape == (n, 3) and torch.equal(tune, tg.tuning_noise(1, n, shape))  # deterministic
    # The premise: torch's CPU generator keeps a seed's low 32 bits, so generator seeds are residues mod 2^32.
    assert torch.equal(torch.randn(4, generator=torch.Generator().manual_seed(2**32 + 5)),
                       torch.randn(4, generator=torch.Generator().manual_seed(5)))
    # The claim: no tuning seed (TUNING_SEED - s, s < 1000) is an evaluation seed (seed * 1_000_003 + i, as in
    # `generation.sample_generators`) of any seed < 4000 and sample index i < 10^6, the seeds' low 32 bits compared.
    assert torch.equal(tune, torch.randn((n, *shape), generator=torch.Generator().manual_seed(tg.TUNING_SEED - 1)))
    evaluation = sampling.sample_generators(7, [11])[0]
    assert torch.equal(torch.randn(4, generator=evaluation),
                       torch.randn(4, generator=torch.Generator().manual_seed(7 * 1_000_003 + 11)))
    tuning = (tg.TUNING_SEED - np.arange(1000, dtype=np.int64)) % 2**32
    seeds = np.arange(4000, dtype=np.int64)[:, None]
    offsets = (tuning[None, :] - seeds * 1_000_003) % 2**32  # the index i at which seed would meet a tuning seed
    assert offsets.min() >= 10**6


def test_stratified_batch_keeps_the_worst_and_estimates_the_pool_mean():
    g = torch.Generator().manual_seed(3)
    errors = torch.rand(1000, generator=g, dtype=f64)
    errors[torch.randperm(1000, generator=g)[:15]] += 200.0  # a few samples that end in another mode
    worst = set(errors.argsort(descending=True)[:50].tolist())
    stratified, plain = [], []
    for seed in range(400):
        index, weights = tg.stratified_batch(errors, 100, seed=seed)
        assert len(set(index.tolist())) == 100 and set(index[:50].tolist()) == worst
        assert math.isclose(float(weights.sum()), 1000.0)
        stratified.append(float((weights * errors[index]).sum() / weights.sum()))
        plain.append(float(errors[torch.randperm(1000, generator=torch.Generator().manual_seed(seed))[:100]].mean()))
    stratified, plain = torch.tensor(stratified), torch.tensor(plain)
    truth = float(errors.mean())
    assert abs(float(stratified.mean()) - truth) < 3 * float(stratified.std()) / 20  # unbiased, within 3 s.e.
    assert float(stratified.std()) < 0.1 * float(plain.std())  # the outliers no longer come and go by chance
    index, weights = tg.stratified_batch(errors, 2000)
    assert torch.equal(index, torch.arange(1000)) and torch.equal(weights, torch.ones(1000, dtype=f64))
    errors[7] = math.nan  # a sample a starting grid diverged on is as hard as they come
    assert 7 in tg.stratified_batch(errors, 100)[0][:50].tolist()


def test_tune_grid_searches_on_the_stratified_batch_of_a_pool():
    m = analytic.preset("ring8")
    sizes = []

    def denoiser(x, sigma, cond=None):
        sizes.append(len(x))
        return m.denoise(x, sigma)

    sch = schedules.get("edm")
    pool = sch.sigma_max * torch.randn(256, 2, generator=torch.Generator().manual_seed(4), dtype=f64)
    ref = tg.reference_solution(m.denoiser(), pool, sch.sigma_max, sch.sigma_min)
    calls = []
    grid, before, after = tg.tune_grid(denoiser, pool, "dpmpp-2m", 4, sch, ref=ref, max_evals=30,
                                       starts=("karras", "logsnr"), batch=32,
                                       progress=lambda done, total: calls.append((done, total, sizes.count(32))))
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]  # after each search, which runs on the batch
    assert 0 < calls[0][2] < calls[1][2] == sizes.count(32)
    assert set(sizes) == {256, 32}  # the pilot runs of the starting grids see the pool, the search the batch
    assert sizes.count(256) == 2 * 4 + 2 * 4 and len(grid) == 5  # and so does the choice between the two results
    assert after == pytest.approx(tg.rms_error(m.denoiser(), pool, ref, grid, "dpmpp-2m"), rel=1e-12)  # on the pool
    best_start = min(tg.rms_error(m.denoiser(), pool, ref, sch.sigmas(4, s), "dpmpp-2m") for s in ("karras", "logsnr"))
    assert before == pytest.approx(best_start, rel=1e-12) and after < before


def test_bump_grid_is_log_snr_spacing_with_more_steps_near_its_centre():
    plain = tg.bump_grid(6, 50.0, 0.05, 1.0, 0.0, 1.0)
    assert torch.allclose(plain[:-1], torch.logspace(math.log10(50.0), math.log10(0.05), 6, dtype=f64), rtol=1e-9)
    bumped = tg.bump_grid(10, 50.0, 0.05, 1.0, 10.0, 0.5)
    assert bumped[0] == 50.0 and bumped[-2] == 0.05 and bumped[-1] == 0 and (bumped[1:] < bumped[:-1]).all()
    plain10 = tg.bump_grid(10, 50.0, 0.05, 1.0, 0.0, 1.0)
    near = [int(((g > math.exp(-0.5)) & (g < math.exp(0.5))).sum()) for g in (plain10, bumped)]
    assert near[1] >= near[0] + 3
    assert torch.equal(tg.bump_grid(1, 50.0, 0.05, 1.0, 10.0, 0.5), torch.tensor([50.0, 0.0], dtype=f64))
    with pytest.raises(ValueError, match="top level"):
        tg.bump_grid(5, 0.05, 50.0, 1.0, 10.0, 0.5)


def test_family_search_puts_the_steps_where_samples_choose_their_mode():
    # two well-separated modes: a sample's mode is decided near sigma ~ 2, and a step too coarse there sends it astray
    m = analytic.GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-2.0], [2.0]]), torch.full((2, 1, 1), 0.0025))
    sch = schedules.get("edm")
    g = torch.Generator().manual_seed(0)
    tune_x, test_x = (sch.sigma_max * torch.randn(512, 1, generator=g, dtype=f64) for _ in range(2))
    d = m.denoiser()
    tune_ref = tg.reference_solution(d, tune_x, sch.sigma_max, sch.sigma_min)
    found = tg.family_search(d, tune_x, tune_ref, "dpmpp-2m", 5, sch.sigma_min, sch.sigma_max)
    assert len(found) == 2 and all(len(grid) == 6 and grid[0] == sch.sigma_max for grid in found)
    test_ref = tg.reference_solution(d, test_x, sch.sigma_max, sch.sigma_min)
    best_standard = min(tg.rms_error(d, test_x, test_ref, sch.sigmas(5, s), "dpmpp-2m")
                        for s in ("karras", "logsnr", "uniform"))
    found_error = tg.rms_error(d, test_x, test_ref, found[0], "dpmpp-2m")
    print(f"held-out RMS error: best standard grid {best_standard:.4f}, family search {found_error:.4f}")
    assert found_error < 0.3 * best_standard
