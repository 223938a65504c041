"""Preconditioning: each parameterisation's coefficients and its meaning, checked against its definition."""

import pytest
import torch
from torch import nn

from rediffuse.core import schedules
from rediffuse.core.denoisers import PARAMETERIZATIONS, coefficients, wrap

f64 = torch.float64


class Probe(nn.Module):
    """A raw network that records its inputs and returns a fixed output."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, c_noise, cond=None):
        self.seen = (x, c_noise, cond)
        return self.out


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(6, 3, generator=g, dtype=f64)
    eps = torch.randn(6, 3, generator=g, dtype=f64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 2.5, 10.0, 80.0], dtype=f64)
    return x0, eps, sigma, x0 + sigma[:, None] * eps


def test_eps_prediction_recovers_x0_from_true_noise():
    x0, eps, sigma, x = _setup()
    d = wrap(Probe(eps), "eps", schedules.get("vp-linear"))
    assert torch.allclose(d(x, sigma), x0, atol=1e-12)
    # the network sees the VP variable sqrt(abar) x and the (fractional) DDPM index
    sch = schedules.get("vp-linear")
    assert torch.allclose(d.net.seen[0], x * sch.scale(sigma)[:, None], atol=1e-12)
    assert torch.allclose(d.net.seen[1], sch.t(sigma))


def test_v_prediction_recovers_x0_from_true_v():
    x0, eps, sigma, x = _setup()
    alpha = 1 / (1 + sigma**2).sqrt()
    s = sigma * alpha
    v = alpha[:, None] * eps - s[:, None] * x0  # Salimans & Ho 2022, in the VP variable
    d = wrap(Probe(v), "v", schedules.get("vp-cosine"))
    assert torch.allclose(d(x, sigma), x0, atol=1e-12)


def test_x0_prediction_passes_through():
    x0, _, sigma, x = _setup()
    assert torch.allclose(wrap(Probe(x0), "x0", schedules.get("ve"))(x, sigma), x0)


def test_flow_velocity_recovers_x0():
    x0, eps, sigma, x = _setup()
    t = sigma / (1 + sigma)
    d = wrap(Probe(eps - x0), "flow", schedules.get("flow"))
    assert torch.allclose(d(x, sigma), x0, atol=1e-12)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps  # the network sees the flow variable
    assert torch.allclose(d.net.seen[0], x_t, atol=1e-12)
    assert torch.allclose(d.net.seen[1], 1000 * t)


def test_edm_coefficients_and_target():
    x0, eps, sigma, x = _setup()
    sd = 0.7
    c_skip, c_out, c_in = coefficients("edm", sigma, sd)
    assert torch.allclose(c_skip, sd**2 / (sigma**2 + sd**2))
    assert torch.allclose(c_in, 1 / (sigma**2 + sd**2).sqrt())
    target = (x0 - c_skip[:, None] * x) / c_out[:, None]  # the EDM effective training target
    d = wrap(Probe(target), "edm", schedules.get("edm"), sigma_data=sd)
    assert torch.allclose(d(x, sigma), x0, atol=1e-10)
    assert torch.allclose(d.net.seen[1], sigma.log() / 4)
    # the effective target has unit variance when x0 has std sd (Karras et al. 2022, appendix B.6)
    g = torch.Generator().manual_seed(1)
    big = sd * torch.randn(200_000, generator=g, dtype=f64)
    n = torch.randn(200_000, generator=g, dtype=f64)
    for s in (0.1, 1.0, 10.0):
        cs, co, _ = coefficients("edm", torch.tensor(s, dtype=f64), sd)
        assert float(((big - cs * (big + s * n)) / co).std()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_sigma_forms_and_cond_pass_through(param):
    x = torch.randn(4, 2)
    d = wrap(Probe(torch.zeros(4, 2)), param, schedules.get("edm"))
    a = d(x, 0.5)
    b = d(x, torch.tensor(0.5))
    c = d(x, torch.full((4,), 0.5))
    assert torch.equal(a, b) and torch.equal(a, c) and a.dtype == torch.float32
    cond = torch.arange(4)
    d(x, 0.5, cond)
    assert d.net.seen[2] is cond


def test_unknown_parameterization():
    with pytest.raises(ValueError, match="unknown parameterization"):
        wrap(Probe(None), "score", schedules.get("edm"))


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "ve", "edm", "flow"])
def test_float_sigma_fast_path_equals_tensor_path(param, schedule):
    net = nn.Linear(3, 3).double()
    probe = lambda x, c_noise, cond=None: net(x) * (1 + c_noise[:, None].to(x.dtype) / 1000)  # noqa: E731
    d = wrap(nn.Module(), param, schedules.get(schedule))
    d._call_net = lambda x, c, cond: probe(x, c)
    x = torch.randn(5, 3, dtype=f64)
    for sigma in (0.02, 0.7, 13.0):
        assert torch.allclose(d(x, sigma), d(x, torch.full((5,), sigma, dtype=f64)), rtol=1e-12, atol=1e-12)
