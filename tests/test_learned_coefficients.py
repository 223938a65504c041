"""Learned iPNDM coefficients: the fixed ones reproduce iPNDM, the fit beats them on fresh noise."""

import pytest
import torch
from torch import nn

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.tuning import coefficients as lc
from rediffuse.tuning import grids as tg
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.teleport import GaussianFlow

f64 = torch.float64


def test_standard_coefficients_are_ipndm_cold_and_warm():
    m = analytic.preset("mix16d")
    d = m.denoiser()
    sch = schedules.get("edm")
    x = sch.sigma_max * torch.randn(64, 16, generator=torch.Generator().manual_seed(0), dtype=f64)
    grid = sch.sigmas(7, "karras")
    assert lc.standard_coefficients(3).tolist() == [[1, 0, 0, 0], [1.5, -0.5, 0, 0], [23 / 12, -16 / 12, 5 / 12, 0]]
    same = samplers.sample(d, x, grid, "ipndm", coefficients=lc.standard_coefficients(7))
    assert (same - samplers.sample(d, x, grid, "ipndm")).abs().max() < 1e-10
    flow = GaussianFlow.fit(m.sample(500, generator=torch.Generator().manual_seed(1)))
    warm = SamplingPlan("ipndm", grid, flow, True, lc.standard_coefficients(6, warm_start=True)).run(d, x)
    assert (warm - SamplingPlan("ipndm", grid, flow, True).run(d, x)).abs().max() < 1e-10
    with pytest.raises(ValueError, match=r"one row per step.*\[7, 4\]"):
        samplers.sample(d, x, grid, "ipndm", coefficients=lc.standard_coefficients(6))


def test_offsets_move_only_the_history_and_keep_each_row_summing_to_one():
    lengths = lc.history_lengths(5)
    assert lengths == [1, 2, 3, 4, 4]
    table = lc._with_offsets(lc.standard_coefficients(5), torch.randn(5, 4, dtype=f64), lengths)
    assert torch.allclose(table.sum(1), torch.ones(5, dtype=f64), atol=1e-12)  # constant slopes stay exact
    assert all((table[i, k:] == 0).all() for i, k in enumerate(lengths))  # nothing on slopes not yet taken
    assert table[0, 0] == 1


def test_fitted_coefficients_beat_ipndm_on_fresh_noise_and_leave_the_network_alone():
    m = analytic.preset("ring8")
    sch = schedules.get("edm")

    class Net(nn.Module):  # the exact denoiser plus an unused parameter that must not collect gradients
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))

        def forward(self, x, sigma, cond=None):
            return m.denoise(x, sigma) + 0 * self.unused

    net = Net()
    g = torch.Generator().manual_seed(3)
    fit_x, test_x = (sch.sigma_max * torch.randn(1024, 2, generator=g, dtype=f64) for _ in range(2))
    fit_ref, test_ref = (tg.reference_solution(net, v, sch.sigma_max, sch.sigma_min) for v in (fit_x, test_x))
    grid = sch.sigmas(6, "karras")
    table, fixed, learned = lc.fit_coefficients(net, fit_x, fit_ref, grid, iters=100, batch=256)
    assert table.shape == (6, 4) and learned < fixed and net.unused.grad is None
    before = tg.rms_error(net, test_x, test_ref, grid, "ipndm")
    with torch.no_grad():
        after = float((samplers.sample(net, test_x, grid, "ipndm", coefficients=table) - test_ref).pow(2).mean().sqrt())
    print(f"fresh-noise RMS error, ipndm at 6 steps: fixed coefficients {before:.4f}, learned {after:.4f}")
    assert after < 0.5 * before


def test_a_fit_keeps_an_improvement_and_else_returns_the_fixed_coefficients():
    m = analytic.isotropic(torch.zeros(1, 3, dtype=f64), 1.0)  # one Gaussian
    d = m.denoiser()
    sch = schedules.get("edm")
    x = sch.sigma_max * torch.randn(64, 3, generator=torch.Generator().manual_seed(5), dtype=f64)
    grid = sch.sigmas(4, "karras")
    ref = tg.reference_solution(d, x, sch.sigma_max, sch.sigma_min)
    table, fixed, learned = lc.fit_coefficients(d, x, ref, grid, iters=10, lr=10.0, batch=16)
    assert learned < 0.25 * fixed  # measured 0.143 -> 0.0113: at 4 steps even ten wild Adam steps help
    table, fixed, learned = lc.fit_coefficients(d, x, ref, grid, iters=10, lr=1e6, batch=16)  # every step diverges
    assert learned == fixed and torch.equal(table, lc.standard_coefficients(4))
    with pytest.raises(ValueError, match="at least 8"):
        lc.fit_coefficients(d, x[:4], ref[:4], grid)


def test_one_warm_step_to_zero_has_nothing_to_learn():
    m = analytic.preset("mix16d")
    flow = GaussianFlow.fit(m.sample(500, generator=torch.Generator().manual_seed(2)))
    x = 80.0 * torch.randn(32, 16, generator=torch.Generator().manual_seed(6), dtype=f64)
    grid = torch.tensor([80.0, 2.0, 0.0], dtype=f64)  # the teleport, then one step: x_next = D
    ref = tg.reference_solution(m.denoiser(), x, 80.0, 0.002)
    table, _, _ = lc.fit_coefficients(m.denoiser(), x, ref, grid, teleport=flow, warm_start=True, iters=5)
    assert table.tolist() == [[1.0, 0.0, 0.0, 0.0]]
