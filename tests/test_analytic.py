"""The analytic mixture: exact denoiser equals Tweedie's formula; samples and moments are right."""

import math

import pytest
import torch

from rediffuse.truth import analytic

f64 = torch.float64


@pytest.mark.parametrize("name", ["ring8", "moons", "checkerboard", "mix16d", "mix64d"])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 40.0])
def test_denoiser_equals_tweedie(name, sigma):
    m = analytic.preset(name)
    g = torch.Generator().manual_seed(0)
    x = (m.sample(16, g) + sigma * torch.randn(16, m.dim, generator=g, dtype=f64)).requires_grad_(True)
    score = torch.autograd.grad(m.log_prob(x, sigma).sum(), x)[0]
    tweedie = x.detach() + sigma**2 * score
    assert (m.denoise(x.detach(), sigma) - tweedie).abs().max() < 1e-10 * max(1.0, sigma**2)


def test_log_prob_of_single_gaussian_matches_closed_form():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, generator=g, dtype=f64)
    cov = a @ a.T + 0.5 * torch.eye(3, dtype=f64)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=f64)
    m = analytic.GaussianMixture(torch.ones(1), mu[None], cov[None])
    x = torch.randn(5, 3, generator=g, dtype=f64)
    ref = torch.distributions.MultivariateNormal(mu, cov + 0.3**2 * torch.eye(3, dtype=f64)).log_prob(x)
    assert torch.allclose(m.log_prob(x, 0.3), ref, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_component_is_the_most_probable_one(sigma):
    m = analytic.preset("mix16d")
    x = m.sample(400, torch.Generator().manual_seed(3))
    eye = torch.eye(m.dim, dtype=f64)
    joint = torch.stack([w.log() + torch.distributions.MultivariateNormal(mu, cov + sigma**2 * eye).log_prob(x)
                         for w, mu, cov in zip(m.weights, m.means, m.covs)], dim=1)
    assert torch.equal(m.component(x, sigma), joint.argmax(1))
    assert len(set(m.component(x).tolist())) == len(m.weights)  # every component is drawn and found


def test_per_sample_sigmas_and_shapes():
    m = analytic.preset("mix16d")
    x = torch.randn(4, 16, dtype=f64)
    sig = torch.tensor([0.1, 1.0, 2.0, 5.0], dtype=f64)
    batched = m.denoise(x, sig)
    single = torch.stack([m.denoise(x[i:i + 1], float(sig[i]))[0] for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-13)
    img = torch.randn(3, 1, 4, 4)  # any per-sample shape with 16 features works, in its own dtype
    out = m.denoiser()(img, 0.5)
    assert out.shape == img.shape and out.dtype == torch.float32


def test_samples_match_moments():
    m = analytic.preset("mix16d")
    x = m.sample(200_000, torch.Generator().manual_seed(2))
    assert torch.allclose(x.mean(0), m.mean(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), m.covariance(), atol=0.05)


def test_denoiser_limits():
    m = analytic.preset("ring8")
    x = torch.randn(10, 2, dtype=f64)
    assert torch.allclose(m.denoise(x, 1e-4), x, atol=1e-5)  # tiny noise: D(x) ~ x
    assert torch.allclose(m.denoise(x * 1e4, 1e4), m.mean().expand(10, 2), atol=0.05)  # huge noise: the mean


def test_bad_input():
    with pytest.raises(ValueError, match="unknown mixture"):
        analytic.preset("nope")
    with pytest.raises(ValueError, match="positive definite"):
        analytic.GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="features"):
        analytic.preset("ring8").denoise(torch.zeros(3, 5), 1.0)
    assert math.isclose(float(analytic.preset("ring8").weights.sum()), 1.0)
