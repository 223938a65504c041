"""Consistency tuning (ECT): the exact boundary, a student against DOP853 on an exact mixture, resume and verbs."""

import math

import numpy as np
import pytest
import torch

import rediffuse
from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import consistency_models as consistency
from rediffuse.core import schedules
from rediffuse.cli.app import main
from rediffuse.config import TrainConfig
from rediffuse.core.denoisers import PARAMETERIZATIONS, Denoiser
from rediffuse.nets.mlp import MLP
from rediffuse.runs import load_run
from rediffuse.train import train
from helpers import STUDENT, assert_same_state, reference_ode, tuned_ring_student

f64 = torch.float64


def _random_mlp(seed: int, num_classes: int | None = None) -> MLP:
    """An MLP with every weight perturbed (its output layer starts at zero otherwise)."""
    torch.manual_seed(seed)
    net = MLP(2, hidden=32, depth=2, emb_dim=16, num_classes=num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_boundary_condition_holds_exactly_for_any_weights(parameterization):
    schedule = schedules.get("vp-linear" if parameterization in ("eps", "v") else "edm")
    net = _random_mlp(1, num_classes=3)
    f = consistency.ConsistencyFunction(net, parameterization, schedule, 0.7, schedule.sigma_min, 0.8)
    x = 3 * torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(16) % 3
    s_min = schedule.sigma_min
    assert torch.equal(f(x, s_min), x)
    assert torch.equal(f(x, torch.full((16,), s_min, dtype=f64)), x)
    assert torch.equal(f(x, s_min, labels), x)
    # away from the boundary f is the Euler (DDIM) step of the denoiser's ODE to sigma_min
    d = Denoiser(net, parameterization, schedule, 0.7)
    for sigma in (1.3, 20.0):
        want = x * (s_min / sigma) + d(x, sigma, labels) * (1 - s_min / sigma)
        assert torch.allclose(f(x, sigma, labels), want, atol=1e-5)
        assert not torch.allclose(f(x, sigma, labels), x, atol=1e-2)


def test_gap_shrinks_by_stage_and_stays_above_sigma_min():
    t = torch.logspace(-2.5, 1.9, 50, dtype=f64)
    levels = [consistency.gap_level(t, stage, 0.5, 0.002) for stage in range(6)]
    for wide, narrow in zip(levels, levels[1:]):
        paired = narrow > 0.002  # where the later stage's partner is not the data itself
        assert bool((t - narrow <= t - wide + 1e-15).all()) and bool((narrow[paired] > wide[paired]).all())
        assert bool(paired.any())
    assert float(consistency.gap_level(t, 0, 0.5, 0.002).min()) == 0.002  # small t pair with the data at stage 0
    large = t[-1]  # ECT's ratio at large t: 1 - 2^-(s+1) (sigmoid(-t) ~ 0)
    assert math.isclose(float(consistency.gap_level(large[None], 2, 0.5, 0.002)) / float(large), 1 - 2**-3,
                        rel_tol=1e-9)


def test_sampler_one_step_is_f_and_two_steps_renoise():
    sigmas = consistency.sampling_sigmas(80.0, 0.821, 2)
    assert sigmas.tolist() == [80.0, 0.821, 0.0] and consistency.sampling_sigmas(80.0, 0.821, 1).tolist() == [80, 0]
    assert len(consistency.sampling_sigmas(80.0, 0.821, 4)) == 5
    calls = []

    def f(x, sigma):
        calls.append(sigma)
        return torch.zeros_like(x) + sigma

    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 1, dtype=f64)
    out = samplers.sample(f, x, sigmas, "consistency", generator=gen, sigma_min=0.002)
    assert calls == [80.0, 0.821] and torch.allclose(out, torch.full_like(out, 0.821))
    renoised = []
    samplers.sample(lambda x, s: renoised.append(x) or torch.zeros_like(x), x, sigmas, "consistency",
                    generator=gen, sigma_min=0.002)
    assert abs(float(renoised[1].std()) - math.sqrt(0.821**2 - 0.002**2)) < 0.03


def test_tuned_student_maps_noise_to_the_ode_endpoint():
    """On an 8-mode ring with its exact denoiser as the teacher, the tuned student's 1- and 2-step outputs are
    close to the exact ODE endpoints (DOP853), far closer than the exact teacher's own 1- and 2-step DDIM."""
    mixture, schedule, gen = analytic.ring(), schedules.get("edm"), torch.Generator().manual_seed(0)
    sd = float(mixture.sample(20_000, gen).std())
    f = tuned_ring_student(mixture, sd, schedule, gen)
    s_max, mid = schedule.sigma_max, f.mid_sigma
    z = s_max * torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    end = reference_ode(mixture, z, s_max, schedule.sigma_min)

    def rms(a, b):
        return float((a.double() - b).pow(2).sum(1).mean().sqrt())

    one = f(z.float(), s_max).double()
    x_mid = one + math.sqrt(mid**2 - schedule.sigma_min**2) * torch.randn(z.shape, generator=gen, dtype=f64)
    two = f(x_mid.float(), mid).double()
    errors = {"student 1": rms(one, end), "student 2": rms(two, reference_ode(mixture, x_mid, mid,
                                                                                  schedule.sigma_min)),
              "ddim 1": rms(samplers.sample(mixture.denoiser(), z, torch.tensor([s_max, 0.0]), "ddim"), end),
              "ddim 2": rms(samplers.sample(mixture.denoiser(), z, torch.tensor([s_max, mid, 0.0]), "ddim"), end)}
    print("\nRMS distance to the exact ODE endpoint:", {k: round(v, 3) for k, v in errors.items()})
    assert errors["student 1"] < 0.25 * errors["ddim 1"]
    assert errors["student 2"] < 0.25 * errors["ddim 2"]


def test_distill_resume_is_bit_exact(teacher, tmp_path):
    """With dropout in the network (shared masks between the pair) and label dropout."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    flags = [*STUDENT, "--lr-schedule", "constant"]  # a rate that does not depend on the run's length
    assert main(["distill", str(teacher), "--out", str(whole), "--steps", "24", *flags]) == 0
    assert main(["distill", str(teacher), "--out", str(split), "--steps", "12", *flags]) == 0
    assert main(["distill", str(teacher), "--out", str(split), "--steps", "24", "--resume", *flags]) == 0
    assert_same_state(whole, split)


def test_distilled_run_samples_and_evaluates_through_the_verbs(teacher, tmp_path, capsys):
    student = tmp_path / "student"
    assert main(["distill", str(teacher), "--out", str(student), "--steps", "10", *STUDENT]) == 0
    f, schedule, config = load_run(student)
    assert isinstance(f, consistency.ConsistencyFunction) and config.objective == "consistency"
    assert config.data == "digits" and config.teacher.endswith("ckpt-00000030")
    # the student starts from the teacher's EMA weights, so after 10 small steps it is still close to the
    # teacher's denoiser (f differs from D by the boundary term, sigma_min / sigma of x - D)
    d, _, _ = load_run(teacher)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 10
    assert float((f(x, 1.0, labels) - d(x, 1.0, labels)).abs().mean()) < 0.2 * float(d(x, 1.0, labels).abs().mean())
    for steps in ("1", "2", "4"):
        out = tmp_path / f"s{steps}.png"
        assert main(["sample", str(student), "--steps", steps, "-n", "20", "--out", str(out)]) == 0
        assert out.is_file() and out.with_suffix(".npz").is_file()
    written = np.load(tmp_path / "s4.npz")["samples"]  # Run.sample takes the same few-step grid
    assert np.array_equal(rediffuse.load(student).sample(20, steps=4).numpy(), written)
    assert main(["sample", str(student), "-n", "20", "--guidance", "2", "--out", str(tmp_path / "g.png")]) == 0
    capsys.readouterr()
    assert main(["eval", str(student), "-n", "200", "--metrics", "fd,acc"]) == 0
    assert "consistency with 2 steps" in capsys.readouterr().out
    assert main(["eval", str(student), "-n", "200", "--metrics", "nll"]) == 2
    assert "no bits/dim" in capsys.readouterr().err


def test_distill_refuses_what_it_cannot_tune(tmp_path, capsys):
    assert main(["distill", str(tmp_path / "nothing"), "--out", str(tmp_path / "s")]) == 2
    assert "distill needs a trained run" in capsys.readouterr().err
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    run = tmp_path / "textrun"
    train(TrainConfig(data=f"text:{text}", objective="masked", out=str(run), steps=2, batch_size=4,
                      block_length=16, progress=False, net_kwargs={"dim": 16, "depth": 1, "heads": 2}))
    assert main(["distill", str(run), "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert "needs a Gaussian (denoising) run" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--objective", "consistency", "--out", str(tmp_path / "s3"), "--steps", "1"]) == 2
    assert "needs --teacher" in capsys.readouterr().err
