"""Analytical teleportation: the Gaussian's closed-form flow against the ODE solved numerically."""

import math

import pytest
import torch
from scipy.integrate import solve_ivp

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.tuning import grids as tg
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.teleport import GaussianFlow, fit_jump, teleported

f64 = torch.float64


def gaussian(dim: int = 6, seed: int = 0) -> analytic.GaussianMixture:
    """One anisotropic Gaussian (variances from 0.01 to about 10) as a one-component mixture."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=f64))
    variances = torch.logspace(-2, 1, dim, dtype=f64)
    cov = q @ torch.diag(variances) @ q.T
    return analytic.GaussianMixture(torch.ones(1), torch.randn(1, dim, generator=g, dtype=f64), cov[None])


def exact_flow(m: analytic.GaussianMixture) -> GaussianFlow:
    """The GaussianFlow of the mixture's single component, from its exact mean and covariance."""
    return GaussianFlow(m.means[0], m.evecs[0], m.evals[0], 0.0)


def ode(m: analytic.GaussianMixture, x: torch.Tensor, s0: float, s1: float, shift: torch.Tensor | float = 0.0
        ) -> torch.Tensor:
    """The probability-flow ODE of the mixture (its D plus a constant `shift`) from s0 to s1 by DOP853 (rtol 1e-11)."""
    def rhs(u, y):
        xx = torch.from_numpy(y).reshape(x.shape)
        return (xx - m.denoise(xx, math.exp(u)) - shift).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(s0), math.log(s1)), x.reshape(-1).numpy(), method="DOP853", rtol=1e-11,
                    atol=1e-11)
    return torch.from_numpy(sol.y[:, -1]).reshape(x.shape)


def test_flow_solves_the_gaussian_ode():
    m = gaussian()
    x = 80.0 * torch.randn(32, 6, generator=torch.Generator().manual_seed(1), dtype=f64)
    flow = exact_flow(m)
    for s1 in (20.0, 1.0, 0.05):
        err = (flow.flow(x, 80.0, s1) - ode(m, x, 80.0, s1)).abs().max()
        assert err < 1e-6, (s1, float(err))


def test_fit_recovers_the_covariance_and_low_rank_keeps_the_trace():
    m = gaussian(8, seed=3)
    data = m.sample(4000, generator=torch.Generator().manual_seed(2))
    full = GaussianFlow.fit(data)
    cov = full.evecs @ torch.diag(full.evals) @ full.evecs.T
    assert torch.allclose(cov, torch.cov(data.T), atol=1e-10)
    assert torch.allclose(full.mean, data.mean(0), atol=1e-12)
    low = GaussianFlow.fit(data, rank=3)
    assert low.evecs.shape == (8, 3)
    assert math.isclose(float(low.evals.sum()) + 5 * low.rest, float(torch.cov(data.T).trace()), rel_tol=1e-10)
    # fewer samples than dimensions: the spare directions share the leftover variance (here none)
    few = GaussianFlow.fit(data[:4])
    assert few.evecs.shape[1] <= 4 and few.rest == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        GaussianFlow.fit(data[:1])


def test_flow_composes_and_round_trips_through_safetensors(tmp_path):
    m = gaussian()
    flow = GaussianFlow.fit(m.sample(500, generator=torch.Generator().manual_seed(4)), rank=4)
    x = 30.0 * torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(5))  # any per-sample shape of 6
    direct, stepped = flow.flow(x, 30.0, 0.5), flow.flow(flow.flow(x, 30.0, 4.0), 4.0, 0.5)
    assert direct.shape == x.shape and direct.dtype == x.dtype
    assert torch.allclose(direct, stepped, atol=1e-5)
    assert torch.equal(flow.flow(x, 2.0, 2.0), x)
    back = GaussianFlow.load(flow.save(tmp_path / "teleport.safetensors"))
    assert torch.equal(back.evecs, flow.evecs) and back.rest == flow.rest
    with pytest.raises(ValueError, match="features"):
        flow.flow(torch.zeros(2, 5), 1.0, 0.5)


def test_teleported_sampler_matches_the_ode_and_skips_calls():
    m = gaussian()
    calls = []

    def denoiser(x, sigma, cond=None):
        calls.append(sigma)
        return m.denoise(x, sigma)

    x = 80.0 * torch.randn(16, 6, generator=torch.Generator().manual_seed(6), dtype=f64)
    fine = schedules.get("edm").sigmas(200, "karras")
    grid = torch.cat([torch.tensor([80.0], dtype=f64), fine[fine <= 5.0]])
    out = SamplingPlan("heun", grid, exact_flow(m)).run(denoiser, x)
    assert 80.0 not in calls and max(calls) <= 5.0
    ref = m.denoise(ode(m, x, 80.0, 0.002), 0.002)
    assert (out - ref).abs().max() < 1e-3


@pytest.mark.slow  # about 20 s on this machine: `make test-all` runs it
def test_teleported_tuned_grid_beats_the_plain_tuned_grid_at_five_evaluations():
    m = analytic.preset("mix16d")
    d = m.denoiser()
    sch = schedules.get("edm")
    gen = torch.Generator().manual_seed(7)
    tune_x, test_x = (sch.sigma_max * torch.randn(128, 16, generator=gen, dtype=f64) for _ in range(2))
    flow = GaussianFlow.fit(m.sample(2000, generator=gen))
    ref_tune = tg.reference_solution(d, tune_x, sch.sigma_max, sch.sigma_min)
    starts = ("karras", "logsnr")
    plain, _, _ = tg.tune_grid(d, tune_x, "unipc-bh2", 5, sch, ref=ref_tune, max_evals=200, starts=starts)
    jumped, _, _ = tg.tune_grid(d, tune_x, "unipc-bh2", 5, sch, ref=ref_tune, max_evals=200, starts=starts,
                                teleport=flow)
    assert len(jumped) == len(plain) + 1 and jumped[0] == sch.sigma_max and jumped[1] < sch.sigma_max
    ref = tg.reference_solution(d, test_x, sch.sigma_max, sch.sigma_min)
    e_plain = tg.rms_error(d, test_x, ref, plain, "unipc-bh2")
    e_jump = tg.rms_error(d, test_x, ref, jumped, "unipc-bh2", teleport=flow)
    bumped, _, _ = tg.tune_grid(d, tune_x, "unipc-bh2", 5, sch, ref=ref_tune, max_evals=200, starts=("bump",),
                                teleport=flow)  # the family search's starts land where the teleport hands over
    assert len(bumped) == len(jumped) and bumped[0] == sch.sigma_max and bumped[1] < sch.sigma_max
    e_bump = tg.rms_error(d, test_x, ref, bumped, "unipc-bh2", teleport=flow)
    print(f"held-out RMS error at 5 NFE: tuned {e_plain:.4f}, teleported + tuned {e_jump:.4f} (from a family search "
          f"{e_bump:.4f})")
    assert e_jump < 0.8 * e_plain and e_bump < 0.8 * e_plain


def test_teleported_searches_start_from_a_low_and_a_high_landing():
    flow = GaussianFlow(torch.zeros(3, dtype=f64), torch.eye(3, dtype=f64)[:, :1], torch.tensor([4.0], dtype=f64), 1.0)
    assert tg.landing_starts(flow, 80.0) == pytest.approx([6.0, math.sqrt(6.0 * 80.0)])  # 3 std of the widest
    assert tg.landing_starts(flow, 5.0) == [5.0]  # a landing at sigma_max is one start, not two


def test_teleported_grid_is_saved_and_loaded(tmp_path):
    m = gaussian()
    flow = GaussianFlow.fit(m.sample(100, generator=torch.Generator().manual_seed(8)))
    grid = torch.tensor([80.0, 6.0, 1.0, 0.1, 0.0], dtype=f64)
    tg.save_plan(tmp_path, SamplingPlan("dpmpp-2m", grid, flow))  # 3 sampler steps after the jump
    plan = tg.load_plan(tmp_path, "dpmpp-2m", 3)
    assert torch.equal(plan.sigmas, grid)
    loaded, warm_start = plan.teleport, plan.warm_start
    assert torch.equal(loaded.mean, flow.mean) and warm_start is False
    tg.save_plan(tmp_path, SamplingPlan("dpmpp-2m", grid, flow, warm_start=True))
    assert tg.load_plan(tmp_path, "dpmpp-2m", 3).warm_start is True
    tg.save_plan(tmp_path, SamplingPlan("dpmpp-2m", grid[1:]))  # a plain 3-step grid replaces it
    plan = tg.load_plan(tmp_path, "dpmpp-2m", 3)
    assert (plan.teleport, plan.warm_start) == (None, False)


def test_history_follows_the_gaussian_ode_and_its_denoiser():
    m = gaussian()
    flow = exact_flow(m)
    x = 80.0 * torch.randn(16, 6, generator=torch.Generator().manual_seed(9), dtype=f64)
    x_land = ode(m, x, 80.0, 4.0)
    for level, x_level, denoised in flow.history(x_land, 4.0, [30.0, 9.0]):
        assert (x_level - ode(m, x, 80.0, level)).abs().max() < 1e-6
        assert (denoised - m.denoise(x_level, level)).abs().max() < 1e-12


def test_warm_start_fills_the_multistep_history_from_the_gaussian():
    """DPM-Solver++(2M)'s first step after the landing uses the Gaussian's D one step-ratio above it (r = 1)."""
    m = gaussian()
    flow = exact_flow(m)
    x = 80.0 * torch.randn(16, 6, generator=torch.Generator().manual_seed(10), dtype=f64)
    grid = torch.tensor([80.0, 4.0, 1.0, 0.2, 0.0], dtype=f64)
    steps = []
    SamplingPlan("dpmpp-2m", grid, flow, warm_start=True).run(m.denoiser(), x, callback=steps.append)
    x_land, d_land = steps[0]["x"], steps[0]["denoised"]
    [(level, _, d_prev)] = flow.history(x_land, 4.0, [16.0])  # 4 * (4 / 1)
    expected = 0.25 * x_land + 0.75 * (1.5 * d_land - 0.5 * d_prev)
    assert torch.allclose(steps[1]["x"], expected, atol=1e-12)
    cold = []
    SamplingPlan("dpmpp-2m", grid, flow).run(m.denoiser(), x, callback=cold.append)
    assert torch.allclose(cold[1]["x"], 0.25 * x_land + 0.75 * d_land, atol=1e-12)  # first order without it
    for bad in ({"name": "euler", "teleport": flow}, {"name": "dpmpp-2m", "teleport": None}):
        with pytest.raises(ValueError, match="warm_start needs a teleport and a multistep sampler"):
            SamplingPlan(bad["name"], grid, bad["teleport"], warm_start=True)


def test_exp_euler_is_exact_for_the_gaussian_and_for_a_constant_rest():
    m = gaussian()
    flow = exact_flow(m)
    x = 30.0 * torch.randn(16, 6, generator=torch.Generator().manual_seed(4), dtype=f64)
    s0, s1 = 30.0, 4.0
    assert (flow.exp_euler(x, m.denoise(x, s0), s0, s1) - ode(m, x, s0, s1)).abs().max() < 1e-6
    rest = torch.randn(16, 6, generator=torch.Generator().manual_seed(5), dtype=f64)  # D = D_Gauss + rest
    exact = ode(m, x, s0, s1, shift=rest)
    assert (flow.exp_euler(x, m.denoise(x, s0) + rest, s0, s1) - exact).abs().max() < 1e-8
    none = GaussianFlow(torch.zeros(6, dtype=f64), torch.zeros(6, 0, dtype=f64), torch.zeros(0, dtype=f64), 0.0)
    denoised = torch.randn(16, 6, generator=torch.Generator().manual_seed(6), dtype=f64)  # no Gaussian: DDIM's step
    assert torch.allclose(none.exp_euler(x, denoised, s0, s1), s1 / s0 * x + (1 - s1 / s0) * denoised, atol=1e-12)
    with pytest.raises(ValueError, match="positive level"):
        flow.exp_euler(x, denoised, s0, 0.0)


@pytest.mark.parametrize("name", sorted(samplers.GAUSSIAN_FIRST_STEP))
def test_teleported_multistep_takes_its_first_step_exactly_on_the_gaussian(name):
    m = gaussian()
    flow = exact_flow(m)
    x = 80.0 * torch.randn(16, 6, generator=torch.Generator().manual_seed(7), dtype=f64)
    grid = torch.tensor([80.0, 20.0, 3.0], dtype=f64)  # teleport to 20, then one network step
    exact = ode(m, x, 80.0, 3.0)
    hooks = SamplingPlan(name, torch.cat([grid, torch.zeros(1, dtype=f64)]), flow).hooks()  # what a plan passes
    assert (samplers.get(name)(m.denoise, *teleported(x, grid, flow), **hooks) - exact).abs().max() < 1e-6
    plain = samplers.get(name)(m.denoise, flow.flow(x, 80.0, 20.0), grid[1:])  # a first-order step instead
    assert (plain - exact).abs().max() > 0.1


def test_fitted_jump_vanishes_on_gaussian_data():
    m = gaussian()
    flow = exact_flow(m)
    x = 40.0 * torch.randn(256, 6, generator=torch.Generator().manual_seed(11), dtype=f64)
    jumped = fit_jump(m.denoiser(), flow, x, 40.0, 2.0, rank=6, steps=400)
    assert jumped.jump.weights.abs().max() < 3e-5  # the Gaussian's map is the exact flow: only Heun's error is left
    assert torch.allclose(jumped.teleport(x, 40.0, 2.0), flow.flow(x, 40.0, 2.0), atol=1e-4)


def test_fitted_jump_lands_closer_to_the_model_flow_on_a_mixture():
    m = analytic.preset("mix16d")
    gen = torch.Generator().manual_seed(12)
    flow = GaussianFlow.fit(m.sample(4000, generator=gen))
    fit_x, test_x = (80.0 * torch.randn(512, 16, generator=gen, dtype=f64) for _ in range(2))
    jumped = fit_jump(m.denoiser(), flow, fit_x, 80.0, 15.0, rank=16, steps=100)
    exact = ode(m, test_x, 80.0, 15.0)  # held-out starts, solved independently by DOP853
    e_gauss = float((flow.teleport(test_x, 80.0, 15.0) - exact).pow(2).mean().sqrt())
    e_jump = float((jumped.teleport(test_x, 80.0, 15.0) - exact).pow(2).mean().sqrt())
    print(f"landing RMS error at sigma 15: Gaussian {e_gauss:.4f}, fitted jump {e_jump:.4f}")  # 0.0185, 0.0062
    assert e_jump < 0.5 * e_gauss
    assert torch.equal(jumped.teleport(test_x, 80.0, 14.0), flow.flow(test_x, 80.0, 14.0))  # only its own jump
    grid = torch.tensor([80.0, 15.0, 1.0, 0.0], dtype=f64)
    x, rest = teleported(test_x, grid, jumped)
    assert torch.equal(x, jumped.teleport(test_x, 80.0, 15.0)) and torch.equal(rest, grid[1:])


def test_fitted_jump_round_trips_through_safetensors_and_checks_its_input(tmp_path):
    m = gaussian()
    gen = torch.Generator().manual_seed(13)
    flow = GaussianFlow.fit(m.sample(500, generator=gen))
    x = 30.0 * torch.randn(64, 6, generator=gen, dtype=f64)
    jumped = fit_jump(m.denoiser(), flow, x, 30.0, 3.0, rank=4, steps=20)
    loaded = GaussianFlow.load(jumped.save(tmp_path / "flow.safetensors"))
    assert (loaded.jump.sigma_from, loaded.jump.sigma_to) == (30.0, 3.0)
    assert torch.equal(loaded.jump.weights, jumped.jump.weights)
    assert torch.allclose(loaded.teleport(x, 30.0, 3.0), jumped.teleport(x, 30.0, 3.0), rtol=0, atol=1e-12)
    assert GaussianFlow.load(flow.save(tmp_path / "plain.safetensors")).jump is None
    with pytest.raises(ValueError, match="at least 20 starts"):
        fit_jump(m.denoiser(), flow, x[:10], 30.0, 3.0, rank=4)
    with pytest.raises(ValueError, match="positive level"):
        fit_jump(m.denoiser(), flow, x, 3.0, 30.0, rank=4)
