"""Sampling plans: the one value that runs a tuned sampler, saved and loaded without code, and the tuning pipeline."""

import pytest
import torch

from rediffuse.truth import analytic
from rediffuse.core import schedules
from rediffuse.samplers import generation
from rediffuse.tuning import grids as tg
from rediffuse.tuning import pipeline
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.teleport import GaussianFlow, fit_jump

f64 = torch.float64


def counting(denoiser):
    calls = []

    def counted(x, sigma, cond=None):
        calls.append(sigma)
        return denoiser(x, sigma)

    return counted, calls


def ring8_flow() -> tuple[analytic.GaussianMixture, GaussianFlow]:
    m = analytic.preset("ring8")
    return m, GaussianFlow.fit(m.sample(2000, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("sampler, teleported", [("euler", False), ("heun", False), ("dpmpp-2s", False),
                                                 ("ipndm", True), ("dpmpp-3m", True), ("heun", True)])
def test_nfe_counts_the_network_calls(sampler, teleported):
    m, flow = ring8_flow()
    sch = schedules.get("edm")
    grid = sch.sigmas(5, "karras")
    plan = SamplingPlan(sampler, torch.cat([grid[:1], grid[1:] * 0.5]), flow) if teleported else SamplingPlan(
        sampler, grid)
    denoiser, calls = counting(m.denoise)
    x = 80.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=f64)
    plan.run(denoiser, x)
    assert plan.nfe == len(calls) and plan.steps == 5 - teleported


def test_hooks_are_what_the_options_mean_by_sampler():
    _, flow = ring8_flow()
    grid = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0], dtype=f64)
    assert SamplingPlan("ipndm", grid).hooks() == {}
    assert set(SamplingPlan("ipndm", grid, flow).hooks()) == {"first_step"}
    assert set(SamplingPlan("ipndm", grid, flow, warm_start=True).hooks()) == {"history"}
    assert SamplingPlan("dpmpp-2m", grid, flow).hooks() == {}  # no first-step hook: a first-order step
    assert set(SamplingPlan("unipc-bh2", grid, flow, warm_start=True).hooks()) == {"history"}


def test_bad_plans_say_what_is_wrong():
    grid = torch.tensor([80.0, 1.0, 0.0], dtype=f64)
    with pytest.raises(ValueError, match="ending in 0"):
        SamplingPlan("euler", torch.tensor([80.0, 1.0], dtype=f64))
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplingPlan("rk45", grid)
    with pytest.raises(ValueError, match="iPNDM"):
        SamplingPlan("euler", grid, coefficients=torch.zeros(2, 4, dtype=f64))
    with pytest.raises(ValueError, match=r"\.json"):
        SamplingPlan("euler", grid).save("plan.txt")


def test_a_plan_round_trips_through_json_and_safetensors(tmp_path):
    m, flow = ring8_flow()
    x = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    grid = torch.tensor([80.0, 12.0, 3.0, 0.5, 0.05, 0.0], dtype=f64)
    jumped = fit_jump(m.denoiser(), flow, x, 80.0, 12.0, rank=2, steps=20)
    table = torch.tensor([[1.0, 0, 0, 0], [1.6, -0.6, 0, 0], [2.0, -1.5, 0.5, 0], [2.2, -2.0, 1.0, -0.2]], dtype=f64)
    plan = SamplingPlan("ipndm", grid, jumped, coefficients=table, meta={"tuning_rms_after": 0.125})
    path = plan.save(tmp_path / "plan.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "plan.teleport.safetensors"]
    back = SamplingPlan.load(path)
    assert back.sampler == "ipndm" and torch.equal(back.sigmas, grid) and torch.equal(back.coefficients, table)
    assert back.meta == {"tuning_rms_after": 0.125} and back.teleport.jump is not None
    assert torch.equal(back.run(m.denoise, x), plan.run(m.denoise, x))
    standard = SamplingPlan.standard(schedules.get("edm"), "heun", 6, "karras")
    assert SamplingPlan.load(standard.save(tmp_path / "heun.json")).entry() == standard.entry()


def test_generate_runs_a_plan_with_per_sample_seeds(tmp_path):
    m, flow = ring8_flow()
    sch = schedules.get("edm")
    plan = SamplingPlan("ipndm", torch.tensor([80.0, 10.0, 2.0, 0.3, 0.0], dtype=f64), flow)
    whole = generation.generate(m.denoise, sch, [2], n=6, plan=plan, seed=3, batch_size=6)
    parts = generation.generate(m.denoise, sch, [2], n=6, plan=plan, seed=3, batch_size=4)
    assert torch.equal(whole, parts)  # sample i depends only on (seed, i)
    noise = generation.prior(sch, 80.0, (6, 2), generation.sample_generators(3, range(6)))
    assert torch.equal(whole, plan.run(m.denoise, noise))
    tg.save_plan(tmp_path, plan)
    assert torch.equal(generation.generate(m.denoise, sch, [2], n=6, plan=tg.load_plan(tmp_path, "ipndm", 3),
                                           seed=3), whole)


def test_the_pipeline_tunes_fits_the_jump_and_learns_with_one_hold_out():
    m, flow = ring8_flow()
    sch = schedules.get("edm")
    pool = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=f64)
    said = []
    plan = pipeline.tune(m.denoiser(), sch, "ipndm", 4, pool, batch=16, max_evals=20, starts=("karras",),
                         teleport=flow, jump=True, learn_iters=5, log=said.append)
    assert isinstance(plan, SamplingPlan) and plan.steps == 4 and plan.coefficients.shape == (4, 4)
    assert tg.held_out_split(64) == 48
    assert "on the 16 held-out draws" in said[1] and "on the 16 held-out draws" in said[2]  # jump, coefficients
    assert {"tuning_rms_before", "tuning_rms_after", "held_out_rms_gaussian_jump", "held_out_rms_fitted_jump",
            "held_out_rms_fixed_coefficients", "held_out_rms_learned_coefficients"} <= set(plan.meta)
    with pytest.raises(ValueError, match="iPNDM"):
        pipeline.tune(m.denoiser(), sch, "euler", 4, pool, learn_iters=5)
