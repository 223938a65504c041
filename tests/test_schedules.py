"""Schedules: round trips, closed forms from the papers, grids and training distributions."""

import math

import pytest
import torch

from rediffuse.core import schedules

NAMES = list(schedules.SCHEDULES)


@pytest.mark.parametrize("name", NAMES)
def test_t_sigma_round_trip(name):
    s = schedules.get(name)
    t = torch.linspace(s.t_min, s.t_max, 101, dtype=torch.float64)
    assert torch.allclose(s.t(s.sigma(t)), t, rtol=1e-9, atol=1e-9)
    sig = torch.logspace(math.log10(s.sigma_min), math.log10(s.sigma_max), 57, dtype=torch.float64)
    assert torch.allclose(s.sigma(s.t(sig)), sig, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spacing", schedules.SPACINGS)
def test_grids_descend_and_end_in_zero(name, spacing):
    s = schedules.get(name)
    g = s.sigmas(12, spacing)
    assert g.dtype == torch.float64 and g.device.type == "cpu" and len(g) == 13
    assert g[-1] == 0 and (g[:-1] > 0).all()
    assert (g[1:] < g[:-1]).all()
    assert g[0] <= s.sigma_max * (1 + 1e-9) and g[-2] >= s.sigma_min * (1 - 1e-9)


def test_bad_names_and_steps():
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.get("nope")
    with pytest.raises(ValueError, match="unknown spacing"):
        schedules.get("edm").sigmas(5, "bogus")
    with pytest.raises(ValueError, match="steps"):
        schedules.get("edm").sigmas(0)


def test_vp_linear_matches_ddpm_alphas():
    s = schedules.get("vp-linear")
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    abar = 1.0
    for i, b in enumerate(betas):
        abar *= 1 - b
        if i in (0, 1, 499, 999):
            assert float(s.sigma(i)) == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-12)
    # the scale maps VE-form x back to the VP variable: s(sigma_t) = sqrt(abar_t)
    assert float(s.scale(s.sigma(999))) == pytest.approx(math.sqrt(abar), rel=1e-10)
    # trailing timesteps as in diffusers: 10 steps -> 999, 899, ..., 99
    assert s.timesteps(10).tolist() == list(range(999, 0, -100))
    assert torch.equal(s.sigmas(10)[:-1], s.discrete_sigmas[s.timesteps(10)])


def test_cosine_closed_form():
    s = schedules.get("vp-cosine")
    for t in (0.1, 0.5, 0.9):
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        abar = f(t) / f(0)
        assert float(s.sigma(t)) == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-12)


def test_flow_and_ve_forms():
    f = schedules.get("flow")
    assert float(f.sigma(0.25)) == pytest.approx(1 / 3)
    assert float(f.scale(1 / 3)) == pytest.approx(0.75)  # x_t = (1 - t) x
    ve = schedules.get("ve", sigma_min=0.01, sigma_max=50.0)
    assert float(ve.sigma(0.5)) == pytest.approx(math.sqrt(0.01 * 50.0))


def test_karras_grid_formula():
    g = schedules.get("edm").sigmas(4, "karras")
    ramp = [i / 3 for i in range(4)]
    want = [(80 ** (1 / 7) + r * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7 for r in ramp]
    assert g[:-1].tolist() == pytest.approx(want, rel=1e-12)


def test_training_distributions():
    g = torch.Generator().manual_seed(0)
    edm = schedules.get("edm").sample_sigmas(200_000, g).log()
    assert float(edm.mean()) == pytest.approx(-1.2, abs=0.01) and float(edm.std()) == pytest.approx(1.2, abs=0.01)
    flow = schedules.get("flow")
    t = flow.t(flow.sample_sigmas(200_000, g))
    logit = (t / (1 - t)).log()
    assert float(logit.mean()) == pytest.approx(0.0, abs=0.01) and float(logit.std()) == pytest.approx(1.0, abs=0.01)
    vp = schedules.get("vp-linear")
    sig = vp.sample_sigmas(100_000, g)
    idx = vp.t(sig).round()
    assert float(idx.mean()) == pytest.approx(499.5, abs=3.0)
    assert torch.allclose(vp.sigma(idx), sig)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    s = schedules.get(name)
    r = schedules.from_config(s.config())
    assert type(r) is type(s) and r.config() == s.config()
    assert torch.equal(r.sigmas(7), s.sigmas(7))
