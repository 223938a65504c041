"""Samplers on the exact mixture denoiser: convergence orders, the DDPM chain, distributions, seeds."""

import math

import pytest
import torch

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.samplers import generation as sampling
from helpers import chunked_sw, measured_order

f64 = torch.float64


@pytest.mark.parametrize("name,nfe_per_step,order,tol", [("euler", 1, 1.0, 0.2), ("ddim", 1, 1.0, 0.2),
                                                         ("heun", 2, 2.0, 0.3)])
def test_convergence_order(problem, name, nfe_per_step, order, tol):
    slope, errs = measured_order(problem, name, [64, 128, 256], nfe_per_step)
    print(f"{name}: slope {slope:.3f}, errors {errs}")
    assert abs(slope - order) < tol


def test_euler_is_ddim_eta0_and_sigma_zero_is_finite():
    m = analytic.preset("ring8")
    x = 80 * torch.randn(32, 2, generator=torch.Generator().manual_seed(4), dtype=f64)
    grid = schedules.get("edm").sigmas(10)
    a = samplers.sample(m.denoiser(), x, grid, "euler")
    b = samplers.sample(m.denoiser(), x, grid, "ddim", eta=0.0)
    assert torch.allclose(a, b, atol=1e-12) and torch.isfinite(a).all()
    for name in samplers.SAMPLERS:
        out = samplers.sample(m.denoiser(), x, grid, name, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all(), name


def ho_ddpm(mixture, x_T, betas, generator):
    """Ho et al. (2020) Algorithm 2 written literally in the VP variable, with eps from the exact denoiser."""
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    x = x_T
    for t in range(len(betas) - 1, -1, -1):
        sigma_ve = math.sqrt((1 - abar[t]) / abar[t])
        x_ve = x / math.sqrt(abar[t])
        eps = (x_ve - mixture.denoise(x_ve, sigma_ve)) / sigma_ve
        mean = (x - betas[t] / math.sqrt(1 - abar[t]) * eps) / math.sqrt(alphas[t])
        if t > 0:
            var = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]  # the exact posterior variance, beta tilde
            mean = mean + math.sqrt(var) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = mean
    return x


def test_ddpm_is_hos_markov_chain():
    m = analytic.preset("8gaussians")
    sch = schedules.get("vp-linear")
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    want = ho_ddpm(m, x_T, torch.linspace(1e-4, 0.02, 1000, dtype=f64), torch.Generator().manual_seed(4))
    x_ve = x_T / float(sch.scale(sch.sigma_max))
    got = samplers.sample(m.denoiser(), x_ve, sch.sigmas(1000), "ddpm", generator=torch.Generator().manual_seed(4))
    assert (got - want).abs().max() < 1e-9


@pytest.mark.parametrize("name,schedule,steps,spacing", [("ddpm", "vp-linear", 1000, "default"),
                                                         ("euler-ancestral", "edm", 500, "karras")])
def test_stochastic_samplers_match_the_distribution(name, schedule, steps, spacing):
    m = analytic.preset("8gaussians")
    n, chunks = 12_000, 12
    exact = m.sample(2 * n, torch.Generator().manual_seed(0))
    floor = chunked_sw(exact[:n], exact[n:], chunks)
    sch = schedules.get(schedule)
    grid = sch.sigmas(steps, spacing)
    x = sampling.prior(sch, float(grid[0]), (n, 2), torch.Generator().manual_seed(1), dtype=f64)
    out = samplers.sample(m.denoiser(), x, grid, name, generator=torch.Generator().manual_seed(2))
    dist = chunked_sw(out, m.sample(n, torch.Generator().manual_seed(5)), chunks)
    print(f"{name}: SW {dist:.4f} vs exact-vs-exact floor {floor:.4f} (ratio {dist / floor:.2f})")
    assert dist < 1.5 * floor


def test_few_step_ancestral_is_detectably_worse():
    """The distribution test has power: 5-step Euler ancestral fails it."""
    m = analytic.preset("8gaussians")
    n, chunks = 12_000, 12
    exact = m.sample(2 * n, torch.Generator().manual_seed(0))
    floor = chunked_sw(exact[:n], exact[n:], chunks)
    sch = schedules.get("edm")
    grid = sch.sigmas(5, "karras")
    x = sampling.prior(sch, float(grid[0]), (n, 2), torch.Generator().manual_seed(1), dtype=f64)
    out = samplers.sample(m.denoiser(), x, grid, "euler-ancestral", generator=torch.Generator().manual_seed(2))
    assert chunked_sw(out, exact[n:], chunks) > 1.5 * floor


def test_heun_churn_adds_noise_only_in_its_window():
    m = analytic.preset("ring8")
    x = 80 * torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=f64)
    grid = schedules.get("edm").sigmas(8)
    plain = samplers.sample(m.denoiser(), x, grid, "heun")
    outside = samplers.sample(m.denoiser(), x, grid, "heun", s_churn=10, s_tmin=1e3, s_tmax=1e4,
                              generator=torch.Generator().manual_seed(0))
    churned = samplers.sample(m.denoiser(), x, grid, "heun", s_churn=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, outside) and not torch.allclose(plain, churned)


def test_sample_i_does_not_depend_on_batch_size():
    m = analytic.preset("ring8")
    sch = schedules.get("edm")
    a = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler="euler-ancestral", steps=6, seed=7, batch_size=3)
    b = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler="euler-ancestral", steps=6, seed=7, batch_size=10)
    c = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler="euler-ancestral", steps=6, seed=8, batch_size=10)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(b, c)


def test_callback_and_bad_grids():
    m = analytic.preset("ring8")
    seen = []
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(6))
    samplers.sample(m.denoiser(), x, schedules.get("edm").sigmas(5), "heun",
                    callback=lambda s: seen.append((s["i"], s["sigma"], s["denoised"].shape)))
    assert [s[0] for s in seen] == list(range(5)) and seen[0][1] == pytest.approx(80.0)
    with pytest.raises(ValueError, match="non-increasing"):
        samplers.sample(m.denoiser(), x, torch.tensor([1.0, 2.0, 0.0]), "euler")
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.get("rk45")
