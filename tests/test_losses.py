"""The one weighted loss equals each classic loss on the same raw network outputs."""

import pytest
import torch
from torch import nn

from rediffuse.core import schedules
from rediffuse.core.denoisers import wrap
from rediffuse.core.losses import WEIGHTINGS, denoising_loss, loss_weight

f64 = torch.float64


class Lin(nn.Module):
    """A small random raw network, so that outputs are arbitrary but fixed."""

    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim + 1, dim).double()

    def forward(self, x, c_noise, cond=None):
        return self.lin(torch.cat([x, c_noise[:, None].to(x.dtype)], 1))


def _batch(dim=5, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, dim, generator=g, dtype=f64)
    noise = torch.randn(n, dim, generator=g, dtype=f64)
    sigma = torch.exp(2 * torch.randn(n, generator=g, dtype=f64))
    return x0, noise, sigma


def test_eps_weighting_is_eps_mse():
    x0, noise, sigma = _batch()
    d = wrap(Lin(5), "eps", schedules.get("vp-linear"))
    x = x0 + sigma[:, None] * noise
    classic = (d.raw(x, sigma) - noise).pow(2).mean()
    assert float(denoising_loss(d, x0, sigma, noise, "eps")) == pytest.approx(float(classic), rel=1e-10)


def test_v_weighting_is_v_mse():
    x0, noise, sigma = _batch()
    d = wrap(Lin(5), "v", schedules.get("vp-cosine"))
    x = x0 + sigma[:, None] * noise
    alpha = (1 / (1 + sigma**2).sqrt())[:, None]
    v = alpha * noise - sigma[:, None] * alpha * x0
    classic = (d.raw(x, sigma) - v).pow(2).mean()
    assert float(denoising_loss(d, x0, sigma, noise, "v")) == pytest.approx(float(classic), rel=1e-10)


def test_flow_weighting_is_velocity_mse():
    x0, noise, sigma = _batch()
    d = wrap(Lin(5), "flow", schedules.get("flow"))
    x = x0 + sigma[:, None] * noise
    classic = (d.raw(x, sigma) - (noise - x0)).pow(2).mean()
    assert float(denoising_loss(d, x0, sigma, noise, "flow")) == pytest.approx(float(classic), rel=1e-10)


def test_edm_weighting_is_edm_loss():
    x0, noise, sigma = _batch()
    sd = 0.5
    d = wrap(Lin(5), "edm", schedules.get("edm"), sigma_data=sd)
    x = x0 + sigma[:, None] * noise
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    target = (x0 - c_skip[:, None] * x) / c_out[:, None]
    classic = (d.raw(x, sigma) - target).pow(2).mean()
    assert float(denoising_loss(d, x0, sigma, noise, "edm", sigma_data=sd)) == pytest.approx(float(classic), rel=1e-10)


def test_min_snr_is_capped_snr_times_eps_mse():
    x0, noise, sigma = _batch()
    d = wrap(Lin(5), "eps", schedules.get("vp-linear"))
    x = x0 + sigma[:, None] * noise
    snr = 1 / sigma**2
    per = (d.raw(x, sigma) - noise).pow(2).mean(1) * torch.clamp(snr, max=5.0) / snr  # Hang et al. 2023
    got = denoising_loss(d, x0, sigma, noise, "min-snr", gamma=5.0)
    assert float(got) == pytest.approx(float(per.mean()), rel=1e-10)


def test_x0_weighting_and_reduction():
    x0, noise, sigma = _batch()
    d = wrap(Lin(5), "x0", schedules.get("ve"))
    per = denoising_loss(d, x0, sigma, noise, "x0", reduction="none")
    assert per.shape == (64,)
    x = x0 + sigma[:, None] * noise
    assert torch.allclose(per, (d(x, sigma) - x0).pow(2).mean(1))


def test_bad_names():
    with pytest.raises(ValueError, match="unknown weighting"):
        loss_weight("snr", torch.ones(1))
    assert set(WEIGHTINGS) >= {"eps", "v", "edm", "flow", "min-snr"}
