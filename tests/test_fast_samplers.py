"""Fast samplers on the exact mixture denoiser: DPM-Solver++, UniPC, iPNDM, LMS and the reverse-time SDE.

Orders are slopes of error against a DOP853 reference (helpers from helpers.py; the `problem` fixture, 24 samples
of ring8 and mix16d and their reference, from conftest.py); distributions are compared with chunked sliced
Wasserstein against the exact-vs-exact floor.
"""

import math

import numpy as np
import pytest
import torch
from helpers import SIGMA_END, SIGMA_MAX, chunked_sw, measured_order, reference_ode

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.samplers import generation as sampling
from rediffuse.samplers.dpm_solver import exp_adams_weights, exp_multistep, psi
from rediffuse.core.schedules import append_zero, karras_sigmas, logsnr_sigmas

f64 = torch.float64
NEW = ["dpmpp-2m", "dpmpp-3m", "dpmpp-2s", "dpmpp-2m-sde", "unipc-bh1", "unipc-bh2", "ipndm", "lms",
       "euler-maruyama"]
DETERMINISTIC = [name for name in NEW if name not in samplers.STOCHASTIC]


@pytest.mark.parametrize("name,options,steps,nfe_per_step,order,tol", [
    ("dpmpp-2m", {}, [64, 128, 256], 1, 2.0, 0.3),
    ("dpmpp-3m", {}, [64, 128, 256], 1, 3.0, 0.4),
    ("dpmpp-2s", {}, [64, 128, 256], 2, 2.0, 0.3),
    ("unipc-bh2", {"corrector": False}, [64, 128, 256], 1, 2.0, 0.3),   # UniP-2 alone (= DPM-Solver++ 2M)
    ("unipc-bh2", {}, [64, 128, 256], 1, 3.0, 0.4),                      # UniP-2 + UniC: one order up
    ("unipc-bh1", {}, [64, 128, 256], 1, 3.0, 0.4),
    ("unipc-bh2", {"order": 1}, [64, 128, 256], 1, 2.0, 0.3),
    ("unipc-bh2", {"order": 3}, [256, 512, 1024], 1, 4.0, 0.4),
    ("lms", {}, [128, 256, 512], 1, 4.0, 0.4),
    ("ipndm", {}, [128, 256, 512], 1, 2.0, 0.3),  # equal-step coefficients on a non-uniform grid: order 2
])
def test_convergence_order(problem, name, options, steps, nfe_per_step, order, tol):
    slope, errs = measured_order(problem, name, steps, nfe_per_step, **options)
    print(f"{name} {options}: slope {slope:.3f}, errors {errs}")
    assert abs(slope - order) < tol


def test_ipndm_is_lms_on_a_uniform_grid_only():
    """iPNDM's equal-step Adams-Bashforth coefficients are LMS's exact ones when (and only when) steps are equal."""
    m = analytic.preset("ring8")
    x = 2.0 * torch.randn(24, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    for grid, same in [(torch.linspace(2.0, 0.2, 17, dtype=f64), True), (karras_sigmas(17, 0.2, 2.0), False)]:
        a, b = (samplers.sample(m.denoiser(), x, grid, name) for name in ("ipndm", "lms"))
        assert torch.allclose(a, b, rtol=0, atol=1e-12) == same


def half_weight_3m(nodes, h):
    """DPM-Solver++(3M) weights as widely copied: psi_3/h^2 on the second difference instead of 2 psi_3/h^2."""
    if len(nodes) < 3:
        return exp_adams_weights(nodes, h)
    quadratic = np.linalg.inv(np.vander(nodes, 3, increasing=True))[2]  # u^2 coefficient of the interpolant
    return (np.array(exp_adams_weights(nodes, h)) - psi(h, 3)[2] / h**2 * quadratic).tolist()


def test_the_half_weight_3m_form_is_only_second_order(problem):
    m, x, ref = problem
    nfes = [128, 256, 512]
    errs = [float((exp_multistep(m.denoiser(), x, karras_sigmas(n + 1, SIGMA_END, SIGMA_MAX), 3, half_weight_3m)
                   - ref).pow(2).mean().sqrt()) for n in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    print(f"half-weight 3M: slope {slope:.3f}, errors {errs}")
    assert abs(slope - 2) < 0.3


def test_equivalences():
    m = analytic.preset("mix16d")
    x = SIGMA_MAX * torch.randn(8, m.dim, generator=torch.Generator().manual_seed(0), dtype=f64)
    grid = schedules.get("edm").sigmas(12)
    run = lambda name, **o: samplers.sample(m.denoiser(), x, grid, name, **o)  # noqa: E731
    two_m = run("dpmpp-2m")
    assert torch.allclose(run("unipc-bh2", corrector=False), two_m, rtol=0, atol=1e-10)
    assert torch.allclose(run("dpmpp-2m-sde", eta=0.0), two_m, rtol=0, atol=1e-10)
    assert torch.allclose(run("unipc-bh1", order=1, corrector=False), run("euler"), rtol=0, atol=1e-10)
    assert torch.allclose(run("lms", order=1), run("euler"), rtol=0, atol=1e-10)


class Counting:
    """A denoiser that counts its calls."""

    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return self.denoiser(x, sigma)


@pytest.mark.parametrize("name,options,nfe", [
    *[(name, {}, lambda n, zero: n) for name in ["dpmpp-2m", "dpmpp-3m", "dpmpp-2m-sde", "unipc-bh1",
                                                  "unipc-bh2", "ipndm", "lms", "euler-maruyama"]],
    ("unipc-bh2", {"order": 3}, lambda n, zero: n),
    ("dpmpp-2s", {}, lambda n, zero: 2 * n - zero),
    ("euler-maruyama", {"corrector_steps": 2}, lambda n, zero: n + 2 * (n - zero)),
])
def test_nfe_per_grid(name, options, nfe):
    m = analytic.preset("ring8")
    x = SIGMA_MAX * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    n = 7
    for zero, grid in [(False, karras_sigmas(n + 1, SIGMA_END, SIGMA_MAX)),
                       (True, append_zero(karras_sigmas(n, SIGMA_END, SIGMA_MAX)))]:
        counter, steps = Counting(m.denoiser()), []
        out = samplers.sample(counter, x, grid, name, generator=torch.Generator().manual_seed(0),
                              callback=lambda s: steps.append(s["i"]), **options)
        assert torch.isfinite(out).all()
        assert counter.calls == nfe(n, zero), (name, zero, counter.calls)
        assert steps == list(range(n))


@pytest.fixture(scope="module")
def ring8_256():
    m = analytic.preset("ring8")
    x = SIGMA_MAX * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=f64)
    return m, x, reference_ode(m, x, SIGMA_MAX, SIGMA_END)


@pytest.mark.parametrize("name,options", [*[(name, {}) for name in NEW], ("unipc-bh2", {"order": 3}),
                                          ("unipc-bh1", {"order": 3}), ("euler-maruyama", {"corrector_steps": 1})])
def test_grids_ending_in_zero(ring8_256, name, options):
    """The step to sigma = 0 (lambda = inf) is finite; for ODE solvers it adds only D's last shrink to x."""
    m, x, ref = ring8_256
    run = lambda grid: samplers.sample(m.denoiser(), x, grid, name,  # noqa: E731
                                       generator=torch.Generator().manual_seed(0), **options)
    for grid in [schedules.get("edm").sigmas(10), schedules.get("vp-linear").sigmas(10)]:
        assert torch.isfinite(run(grid)).all()
    grid = karras_sigmas(100, SIGMA_END, SIGMA_MAX)
    out = run(append_zero(grid))
    assert torch.isfinite(out).all()
    if name not in samplers.STOCHASTIC:
        change = float((out - run(grid)).abs().max())  # x - D(x, 0.002) = O(sigma^2 / std^2) |x - mu|
        err = float((out - ref).pow(2).mean().sqrt())
        print(f"{name} {options}: final step to 0 moves x by {change:.1e}; error {err:.1e} against x(sigma_end)")
        assert change < 1e-4 and err < 2e-3


@pytest.mark.parametrize("name", ["dpmpp-3m", "unipc-bh2", "lms", "ipndm"])
def test_multistep_samplers_pass_over_a_level_repeated_to_rounding(ring8_256, name):
    """A level repeated to within rounding (a search can put two there) is skipped like an exact repeat."""
    m, x, _ = ring8_256
    grid = schedules.get("edm").sigmas(8)
    nudged = torch.cat([grid[:4], grid[3:4] * (1 - 1e-15), grid[4:]])
    repeated = torch.cat([grid[:4], grid[3:4], grid[4:]])
    out = samplers.sample(m.denoiser(), x, grid, name)
    assert torch.equal(samplers.sample(m.denoiser(), x, repeated, name), out)
    assert torch.allclose(samplers.sample(m.denoiser(), x, nudged, name), out, rtol=0, atol=1e-10)


def test_ten_nfe_beats_euler(ring8_256):
    """At 10 NFE on the log-SNR grid every deterministic new sampler beats Euler (printed: Karras too)."""
    m, x, ref = ring8_256
    errors = {}
    for spacing, make in [("logsnr", logsnr_sigmas), ("karras", karras_sigmas)]:
        for name in ["euler", *DETERMINISTIC]:
            per = 2 if name == "dpmpp-2s" else 1
            out = samplers.sample(m.denoiser(), x, make(10 // per + 1, SIGMA_END, SIGMA_MAX), name)
            errors[spacing, name] = float((out - ref).pow(2).mean().sqrt())
        print(spacing, ", ".join(f"{name} {errors[spacing, name]:.3f}" for name in ["euler", *DETERMINISTIC]))
    assert all(errors["logsnr", name] < errors["logsnr", "euler"] for name in DETERMINISTIC)


@pytest.fixture(scope="module")
def gaussians8():
    m = analytic.preset("8gaussians")
    n, chunks = 12_000, 12
    exact = m.sample(2 * n, torch.Generator().manual_seed(0))
    return m, n, chunks, chunked_sw(exact[:n], exact[n:], chunks), m.sample(n, torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name,steps,options", [("dpmpp-2m-sde", 200, {}), ("euler-maruyama", 200, {}),
                                                ("euler-maruyama", 101, {"corrector_steps": 1})])
def test_stochastic_samplers_match_the_distribution(gaussians8, name, steps, options):
    m, n, chunks, floor, exact = gaussians8
    sch = schedules.get("edm")
    grid = sch.sigmas(steps, "karras")
    x = sampling.prior(sch, float(grid[0]), (n, 2), torch.Generator().manual_seed(1), dtype=f64)
    out = samplers.sample(m.denoiser(), x, grid, name, generator=torch.Generator().manual_seed(2), **options)
    dist = chunked_sw(out, exact, chunks)
    print(f"{name} {options}: SW {dist:.4f} vs exact-vs-exact floor {floor:.4f} (ratio {dist / floor:.2f})")
    assert dist < 1.5 * floor


@pytest.mark.parametrize("name", ["dpmpp-2m-sde", "euler-maruyama"])
def test_stochastic_sample_i_does_not_depend_on_batch_size(name):
    m = analytic.preset("ring8")
    sch = schedules.get("edm")
    a = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler=name, steps=6, seed=7, batch_size=3)
    b = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler=name, steps=6, seed=7, batch_size=10)
    c = sampling.generate(m.denoiser(), sch, (2,), n=10, sampler=name, steps=6, seed=8, batch_size=10)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(b, c)


def test_bad_options():
    m = analytic.preset("ring8")
    x, grid = torch.randn(4, 2), schedules.get("edm").sigmas(5)
    for name, options in [("unipc-bh2", {"order": 4}), ("ipndm", {"order": 5}), ("lms", {"order": 0})]:
        with pytest.raises(ValueError, match="order"):
            samplers.sample(m.denoiser(), x, grid, name, **options)


def run_diffusers_scheduler(scheduler, denoiser, x_ve, generator=None):
    """A diffusers scheduler loop with the exact denoiser as a sample-prediction model (VP scaling).

    With a generator, each step gets variance_noise drawn as our samplers draw it (float64, one per step).
    """
    sig = scheduler.sigmas.to(f64)
    alpha = lambda s: 1 / math.sqrt(1 + s**2)  # noqa: E731
    x = x_ve * alpha(float(sig[0]))
    for i, t in enumerate(scheduler.timesteps):
        s = float(sig[i])
        noise = {} if generator is None else {"variance_noise": torch.randn(x.shape, generator=generator, dtype=f64)}
        x = scheduler.step(denoiser(x / alpha(s), s), t, x, **noise).prev_sample
    return x / alpha(float(sig[-1]))


@pytest.mark.parametrize("scheduler,config,name,options", [
    ("DPMSolverMultistepScheduler", {}, "dpmpp-2m", {}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "dpmpp-2m-sde", {}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "solver_type": "heun"}, "half-weight 3m", {}),
    ("UniPCMultistepScheduler", {"solver_type": "bh1"}, "unipc-bh1", {}),
    ("UniPCMultistepScheduler", {"solver_type": "bh2"}, "unipc-bh2", {}),
    ("UniPCMultistepScheduler", {"solver_type": "bh1", "solver_order": 3}, "unipc-bh1", {"order": 3}),
    ("UniPCMultistepScheduler", {"solver_type": "bh2", "solver_order": 3}, "unipc-bh2", {"order": 3}),
])
def test_diffusers_parity(scheduler, config, name, options):
    """Same grid, noise and exact denoiser as diffusers' schedulers (sample prediction, no lower-order final).

    diffusers' third-order DPM-Solver++ is the half-weight form (its second step as solver_type='heun').
    """
    diffusers = pytest.importorskip("diffusers")
    sched = getattr(diffusers, scheduler)(prediction_type="sample", timestep_spacing="trailing",
                                          lower_order_final=False, final_sigmas_type="sigma_min", **config)
    sched.set_timesteps(12)
    m = analytic.preset("mix16d")
    grid = sched.sigmas.to(f64)
    x = float(grid[0]) * torch.randn(16, m.dim, generator=torch.Generator().manual_seed(0), dtype=f64)
    noise = torch.Generator().manual_seed(1) if name in samplers.STOCHASTIC else None
    want = run_diffusers_scheduler(sched, m.denoiser(), x, noise)
    if name == "half-weight 3m":
        got = exp_multistep(m.denoiser(), x, grid, 3, half_weight_3m)
    else:
        got = samplers.sample(m.denoiser(), x, grid, name, generator=torch.Generator().manual_seed(1), **options)
    print(f"{scheduler} {config}: max |ours - diffusers| {float((got - want).abs().max()):.2e}")
    assert (got - want).abs().max() < 1e-4
