"""Likelihoods against closed-form truth: ODE log-density vs the analytic mixture, bits/dim on known 8-bit
distributions, and DDPM's variational bound vs its closed-form expectation for Gaussian data."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.evaluation.likelihood import (bits_from_log_prob, bits_per_dim, dequantize,
                                             discretized_gaussian_log_prob, log_likelihood, ode_likelihood, to_levels,
                                             vlb_bits_per_dim)
from rediffuse.evaluation.likelihood.ode import draw_probes, exact_divergence, hutchinson_divergence, resolve_prior_std
from rediffuse.evaluation.likelihood.vlb import log_normal_mass, posterior_terms

f64 = torch.float64
SIGMA_MIN = 0.01


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noisy_samples(mixture, n, sigma, seed):
    """n samples of the mixture convolved with N(0, sigma^2 I)."""
    g = gen(seed)
    return mixture.sample(n, g) + sigma * torch.randn(n, mixture.dim, generator=g, dtype=f64)


def matched_prior_std(mixture, sigma_max):
    """The std of the isotropic Gaussian closest to the mixture noised to sigma_max."""
    return math.sqrt(sigma_max**2 + float(mixture.covariance().diagonal().mean()))


def stderr(v: torch.Tensor) -> float:
    return float(v.std()) / math.sqrt(v.numel())


def gaussian(mu, std):
    """A one-component GaussianMixture N(mu, std^2 I)."""
    d = mu.numel()
    return analytic.GaussianMixture(torch.ones(1), mu.reshape(1, d), (std**2 * torch.eye(d, dtype=f64))[None])


# ---------------------------------------------------------------- the probability-flow ODE


@pytest.mark.parametrize("name", ["8gaussians", "ring8", "mix16d"])
def test_ode_log_likelihood_matches_analytic(name):
    m, sigma_max = analytic.preset(name), 1000.0
    x = noisy_samples(m, 12, SIGMA_MIN, seed=1)
    r = ode_likelihood(m.denoiser(), x, SIGMA_MIN, sigma_max, prior_std=matched_prior_std(m, sigma_max))
    err = (r.log_prob - m.log_prob(x, SIGMA_MIN)) / m.dim
    assert err.abs().max() < 1e-3, f"{name}: max |error| {float(err.abs().max()):.2e} nats/dim"
    # the integral alone, with the true density at sigma_max in place of the Gaussian prior
    ode_part = (r.delta_log_prob + m.log_prob(r.x_end, sigma_max) - m.log_prob(x, SIGMA_MIN)) / m.dim
    assert ode_part.abs().max() < 2e-4
    assert r.nfe > 20


def test_divergences_of_a_known_map():
    a = torch.randn(70, 70, generator=gen(0), dtype=f64)
    fn = lambda x: torch.tanh(x @ a) * x  # noqa: E731
    x = torch.randn(5, 70, generator=gen(1), dtype=f64)
    jacobians = torch.func.vmap(torch.func.jacrev(lambda v: fn(v[None])[0]))(x)
    trace = jacobians.diagonal(dim1=1, dim2=2).sum(1)
    for chunk in (7, 64, 100):
        torch.testing.assert_close(exact_divergence(fn, x, chunk)[1], trace)
    probes = draw_probes(x, 200, "rademacher", gen(2))
    estimate = torch.stack([hutchinson_divergence(fn, x, p[None])[1] for p in probes])
    se = estimate.std(0) / math.sqrt(200)
    assert ((estimate.mean(0) - trace).abs() < 4 * se).all()


def test_zero_denoiser_gives_the_gaussian_and_the_sign():
    # data = a point mass at 0: p_sigma = N(0, sigma^2 I), D = 0; checks the sign of the divergence integral
    zero = lambda x, sigma: torch.zeros_like(x)  # noqa: E731
    x = torch.randn(5, 3, generator=gen(0), dtype=f64) * 0.3
    exact = -0.5 * (3 * math.log(2 * math.pi * 0.3**2) + x.pow(2).sum(1) / 0.3**2)
    for divergence in ("exact", "hutchinson"):  # Rademacher probes are exact for the identity
        got = log_likelihood(zero, x, 0.3, 50.0, divergence=divergence, generator=gen(1), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got, exact, rtol=0, atol=1e-6)


def test_prior_std_defaults():
    assert resolve_prior_std(80.0, None, None) == 80.0
    assert resolve_prior_std(80.0, None, schedules.VPLinear()) == pytest.approx(math.sqrt(1 + 80.0**2))
    assert resolve_prior_std(80.0, 3.0, schedules.VPLinear()) == 3.0


def test_image_shaped_input_matches_flat():
    m = analytic.preset("mix16d")
    x = noisy_samples(m, 3, SIGMA_MIN, seed=2)
    flat = log_likelihood(m.denoiser(), x, SIGMA_MIN, 100.0)
    image = log_likelihood(m.denoiser(), x.reshape(3, 1, 4, 4), SIGMA_MIN, 100.0)
    torch.testing.assert_close(image, flat, rtol=0, atol=1e-8)


def test_hutchinson_on_2d_agrees_with_analytic():
    m = analytic.preset("8gaussians")
    x = noisy_samples(m, 128, SIGMA_MIN, seed=3)
    r = ode_likelihood(m.denoiser(), x, SIGMA_MIN, 1000.0, prior_std=matched_prior_std(m, 1000.0),
                       divergence="hutchinson", generator=gen(4))
    err = (r.log_prob - m.log_prob(x, SIGMA_MIN)) / m.dim
    assert abs(float(err.mean())) < 3 * stderr(err), f"bias {float(err.mean()):.3f} +- {stderr(err):.3f}"


@pytest.mark.parametrize("name,probe", [("8gaussians", "rademacher"), ("mix16d", "rademacher"),
                                        ("mix16d", "gaussian")])
def test_hutchinson_is_unbiased(name, probe):
    m = analytic.preset(name)
    points, repeats = 3, 100
    x = noisy_samples(m, points, SIGMA_MIN, seed=5)
    exact = ode_likelihood(m.denoiser(), x, SIGMA_MIN, 100.0).log_prob
    r = ode_likelihood(m.denoiser(), x.repeat_interleave(repeats, 0), SIGMA_MIN, 100.0, divergence="hutchinson",
                       probe=probe, generator=gen(6))
    diff = r.log_prob.reshape(points, repeats) - exact[:, None]
    se = diff.std(1) / math.sqrt(repeats)
    assert (diff.mean(1).abs() < 3 * se).all(), f"means {diff.mean(1)}, standard errors {se}"


def test_more_probes_less_variance():
    m = analytic.preset("mix16d")
    x = noisy_samples(m, 1, SIGMA_MIN, seed=7).repeat(64, 1)
    one, four = (ode_likelihood(m.denoiser(), x, SIGMA_MIN, 100.0, divergence="hutchinson", num_probes=k,
                                generator=gen(8), rtol=1e-4, atol=1e-4).log_prob.std() for k in (1, 4))
    assert 0.3 < float(four / one) < 0.75  # 1/sqrt(4) = 0.5


# ---------------------------------------------------------------- bits per dimension


class UniformDenoiser(torch.nn.Module):
    """The exact denoiser of U[-1, 1]^d: E[x0 | x] is the mean of N(x, sigma^2) truncated to [-1, 1]."""

    def forward(self, x, sigma, cond=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        a, b = (-1 - x) / sigma, (1 - x) / sigma
        log_mass = log_normal_mass(a, b)
        log_pdf = lambda z: -0.5 * z**2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
        return x + sigma * ((log_pdf(a) - log_mass).exp() - (log_pdf(b) - log_mass).exp())


def uniform_levels(n, dim, seed):
    return torch.randint(0, 256, (n, dim), generator=gen(seed)).to(torch.uint8)


def test_uniform_model_gives_exactly_8_bits():
    levels = uniform_levels(10, 12, seed=0)
    x, log_jacobian = dequantize(to_levels(levels), gen(1), f64)
    assert x.min() >= -1 and x.max() < 1
    result = bits_from_log_prob(torch.full((10,), -12 * math.log(2), dtype=f64), log_jacobian, 12)
    torch.testing.assert_close(result.bits_per_dim, torch.full((10,), 8.0, dtype=f64), rtol=0, atol=1e-12)
    assert result.log_jacobian == pytest.approx(-12 * math.log(128))


def test_uniform_data_under_the_exact_uniform_model_ode():
    levels = uniform_levels(16, 3, seed=2)
    result = bits_per_dim(UniformDenoiser(), levels, 1e-3, 1000.0, prior_std=math.sqrt(1000.0**2 + 1 / 3),
                          generator=gen(3), dtype=f64)
    assert (result.bits_per_dim >= 8 - 1e-4).all()
    assert float(result.bits_per_dim.mean()) == pytest.approx(8.0, abs=2e-3)


def test_gaussian_model_on_uniform_data():
    # dequantised uniform 8-bit data is exactly U[-1, 1)^d, so its cross-entropy under N(0, v I) is closed-form
    dim, sigma_min = 4, 1e-3
    model = gaussian(torch.zeros(dim, dtype=f64), math.sqrt(1 / 3))
    result = bits_per_dim(model.denoiser(), uniform_levels(96, dim, seed=4), sigma_min, 1000.0,
                          prior_std=math.sqrt(1000.0**2 + 1 / 3), generator=gen(5), dtype=f64)
    var = 1 / 3 + sigma_min**2
    expected = (0.5 * math.log(2 * math.pi * var) + (1 / 3) / (2 * var)) / math.log(2) + 7
    mean, se = float(result.bits_per_dim.mean()), stderr(result.bits_per_dim)
    assert abs(mean - expected) < 3 * se, f"{mean:.4f} vs {expected:.4f} (se {se:.4f})"
    assert expected > 8 and mean > 8 - 3 * se  # cross-entropy >= the entropy, 8 bits/dim
    summary = result.summary()
    assert summary["bits_per_dim"] == pytest.approx(mean) and summary["nfe"] == result.nfe > 0


@pytest.mark.parametrize("std", [1e-4, 1e-3, 4e-3, 2e-2, 0.5])
def test_dequantised_bits_are_never_negative(std):
    # a model as sharp as you like around one 8-bit value: E_u[bits] >= -log2 P(k) / D >= 0
    dim, draws, level = 4, 4000, 77
    centre = (level + 0.5) / 128 - 1
    levels = torch.full((draws, dim), level, dtype=torch.uint8)
    x, log_jacobian = dequantize(to_levels(levels), gen(6), f64)
    log_prob = torch.distributions.Normal(centre, std).log_prob(x).sum(1)
    bits = bits_from_log_prob(log_prob, log_jacobian, dim).bits_per_dim
    lo, hi = (level / 128 - 1 - centre) / std, ((level + 1) / 128 - 1 - centre) / std
    exact = -math.log2(norm.cdf(hi) - norm.cdf(lo))  # per dimension
    assert float(bits.mean()) >= exact - 3 * stderr(bits)
    assert float(bits.mean()) >= 0


def test_to_levels():
    levels = uniform_levels(4, 6, seed=8)
    torch.testing.assert_close(to_levels(levels.float() / 127.5 - 1), levels.long())
    with pytest.raises(ValueError):
        to_levels(levels.float() / 255)  # [0, 1] data is not on the 8-bit grid of [-1, 1]
    with pytest.raises(ValueError):
        to_levels(torch.tensor([[256]]))


# ---------------------------------------------------------------- DDPM's variational bound


def test_discretized_gaussian_is_a_distribution():
    levels = torch.arange(256)
    for mean, std in [(0.0, 0.3), (0.95, 0.01), (-2.0, 0.5), (0.3, 1e-3), (0.5, 20.0)]:
        log_p = discretized_gaussian_log_prob(levels, torch.full((256,), mean, dtype=f64), std)
        assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    x = levels.double() / 127.5 - 1
    edges_lo = np.where(levels == 0, -np.inf, x - 1 / 255)
    edges_hi = np.where(levels == 255, np.inf, x + 1 / 255)
    expected = np.log(norm.cdf(edges_hi, 0.1, 0.2) - norm.cdf(edges_lo, 0.1, 0.2))
    got = discretized_gaussian_log_prob(levels, torch.full((256,), 0.1, dtype=f64), 0.2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)
    far = discretized_gaussian_log_prob(torch.tensor([128]), torch.tensor([-1.0], dtype=f64), 0.01)
    assert torch.isfinite(far).all() and float(far) < -1000  # deep in the tail, no log(0)


def test_posterior_kl_weight_is_the_snr_step():
    # c0^2 / beta~_t = SNR(t-1) - SNR(t) (Kingma et al. 2021, variational diffusion models)
    s = schedules.VPLinear()
    terms = posterior_terms(s)
    snr = 1 / s.discrete_sigmas**2
    weight = terms["c0"][1:] ** 2 / terms["beta_tilde"][1:]
    torch.testing.assert_close(weight, snr[:-1] - snr[1:], rtol=1e-8, atol=0)


def expected_vlb_nats(schedule, levels, mu, std, variance):
    """E[VLB | x0] per sample (nats) for data ~ N(mu, std^2 I) with its exact linear denoiser, no clipping."""
    betas = schedules.discrete_betas("linear", schedule.num_steps, schedule.beta_start, schedule.beta_end)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=f64), abar[:-1]])
    post_var = (1 - abar_prev) / (1 - abar) * betas  # Ho et al. 2020, eq. 7
    c0 = abar_prev.sqrt() * betas / (1 - abar)
    model_var = betas if variance == "beta" else post_var
    x0 = levels.double() / 127.5 - 1
    sig2 = (1 - abar) / abar
    k = std**2 / (std**2 + sig2)  # D(z) = mu + k (z - mu)
    mse = ((1 - k[:, None, None]) * (x0 - mu)) ** 2 + (k**2 * sig2)[:, None, None]  # [T, B, D]
    kl = 0.5 * ((model_var / post_var).log() + post_var / model_var - 1)[1:, None, None] \
        + (c0**2 / (2 * model_var))[1:, None, None] * mse[1:]
    prior = 0.5 * (abar[-1] * x0**2 - abar[-1] - (1 - abar[-1]).log())
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E over eps ~ N(0, 1) of the decoder term
    means = mu + k[0] * (x0 - mu)
    decoder = sum(w / math.sqrt(2 * math.pi) * -discretized_gaussian_log_prob(
        levels, means + k[0] * sig2[0].sqrt() * e, float(post_var[1].sqrt())) for e, w in zip(nodes, weights))
    return (prior + kl.sum(0) + decoder).sum(1)


@pytest.fixture(scope="module")
def gaussian_8bit():
    """A Gaussian N(mu, 0.2^2 I) in 8 dims, its exact denoiser, 8-bit samples and their exact NLL (bits/dim)."""
    dim, std = 8, 0.2
    mu = 0.6 * torch.rand(dim, generator=gen(10), dtype=f64) - 0.3
    model = gaussian(mu, std)
    levels = ((model.sample(256, gen(11)) + 1) * 127.5).round().clamp(0, 255).long()
    true_bits = -discretized_gaussian_log_prob(levels, mu.expand_as(levels), std).sum(1) / (dim * math.log(2))
    return model, mu, std, levels, true_bits


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_vlb_matches_its_closed_form_expectation(gaussian_8bit, variance):
    model, mu, std, levels, _ = gaussian_8bit
    s = schedules.VPLinear()
    vlb = vlb_bits_per_dim(model.denoiser(), s, levels / 127.5 - 1, variance=variance, clip_denoised=False,
                           generator=gen(12))
    assert vlb.nfe == 1000
    expected = expected_vlb_nats(s, levels, mu, std, variance) / (levels.shape[1] * math.log(2))
    resid = vlb.bits_per_dim - expected
    assert abs(float(resid.mean())) < 3 * stderr(resid), f"{float(resid.mean()):.4f} +- {stderr(resid):.4f}"
    torch.testing.assert_close(vlb.bits_per_dim, vlb.prior + vlb.diffusion + vlb.decoder)


def test_vlb_bounds_the_true_nll_and_the_ode(gaussian_8bit):
    model, mu, std, levels, true_bits = gaussian_8bit
    dim, s = levels.shape[1], schedules.VPLinear()
    ode = bits_per_dim(model.denoiser(), levels.to(torch.uint8), 1e-3, 1000.0, generator=gen(14), dtype=f64,
                       prior_std=math.sqrt(1000.0**2 + std**2)).bits_per_dim
    ode_gap = ode - true_bits  # dequantisation is nearly tight for a density smooth on the bin scale
    assert -3 * stderr(ode_gap) < float(ode_gap.mean()) < 0.01
    # E[VLB | x0] in closed form: above the true NLL and the ODE; close for beta_t, loose for beta~_t at T = 1000
    for variance, most in [("beta", 0.2), ("posterior", 1.0)]:
        expected = expected_vlb_nats(s, levels, mu, std, variance) / (dim * math.log(2))
        assert 0 < float((expected - true_bits).mean()) < most
        assert 0 < float((expected - ode).mean()) < most
    vlb = vlb_bits_per_dim(model.denoiser(), s, levels.to(torch.uint8), generator=gen(13)).bits_per_dim
    gap = vlb - ode
    assert -3 * stderr(gap) < float(gap.mean()) < 0.2 + 3 * stderr(gap)


def test_subsampled_vlb_is_unbiased(gaussian_8bit):
    model, _, _, levels, _ = gaussian_8bit
    s, x0 = schedules.VPLinear(), levels / 127.5 - 1
    full = vlb_bits_per_dim(model.denoiser(), s, x0, generator=gen(15)).bits_per_dim
    runs = [vlb_bits_per_dim(model.denoiser(), s, x0, num_timesteps=50, generator=gen(100 + r)) for r in range(20)]
    assert runs[0].nfe == 51
    sub = torch.stack([r.bits_per_dim for r in runs])
    diff = sub.mean(0) - full
    assert abs(float(diff.mean())) < 3 * stderr(diff), f"{float(diff.mean()):.4f} +- {stderr(diff):.4f}"
    with pytest.raises(ValueError):
        vlb_bits_per_dim(model.denoiser(), s, x0, num_timesteps=1000)
