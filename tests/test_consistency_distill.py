"""Consistency distillation (`distill --method cd`): the teacher's Euler step, guidance baked into a student on an
exact class-conditional ring against DOP853, resume and refusals."""

import math

import pytest
import torch
from torch import nn

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.core import consistency_models as consistency
from rediffuse.core import schedules
from rediffuse.cli.app import main
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.runs import load_run, run_info
from helpers import STUDENT, assert_same_state, reference_ode, tuned_ring_student

f64 = torch.float64


class ExactRingByClass(nn.Module):
    """The exact denoiser of a ring with one class per component: D(x, sigma, c) of component c's Gaussian, and
    the whole mixture's for the null class (K, or -1 as classifier-free guidance passes it)."""

    def __init__(self, mixture: analytic.GaussianMixture) -> None:
        super().__init__()
        self.mixture = mixture
        self.parts = [analytic.GaussianMixture(torch.ones(1), m[None], c[None])
                      for m, c in zip(mixture.means, mixture.covs)]

    def forward(self, x, sigma, cond=None):
        out = self.mixture.denoise(x, sigma)
        if cond is None:
            return out
        for k, part in enumerate(self.parts):
            rows = cond == k
            if rows.any():
                level = sigma[rows] if isinstance(sigma, torch.Tensor) and sigma.ndim > 0 else sigma
                out[rows] = part.denoise(x[rows], level)
        return out


def test_teacher_euler_step_has_second_order_local_error():
    """One Euler step of the exact ring's ODE from t to r: its error against DOP853 falls 4x per halved gap."""
    mixture = analytic.ring()
    t = torch.full((64,), 2.0, dtype=f64)
    x = mixture.sample(64, torch.Generator().manual_seed(0)) + 2.0 * torch.randn(64, 2, dtype=f64)
    errors = []
    for gap in (0.2, 0.1, 0.05):
        stepped = consistency.euler_step(mixture.denoiser(), x, t, t - gap)
        errors.append(float((stepped - reference_ode(mixture, x, 2.0, 2.0 - gap)).norm(dim=1).max()))
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.5 < q < 4.5 for q in ratios), (errors, ratios)


def _distilled_ring_student(guide, mixture, sd, schedule, gen):
    """A conditional MLP regressed on the exact class denoisers (10% null labels), then tuned by consistency
    distillation from `guide`."""
    k = len(mixture.means)

    def labelled(n):
        labels = torch.randint(0, k, (n,), generator=gen)
        x0 = mixture.means[labels] + math.sqrt(float(mixture.evals[0, 0])) * torch.randn(n, 2, generator=gen,
                                                                                          dtype=f64)
        return x0, torch.where(torch.rand(n, generator=gen) < 0.1, torch.full_like(labels, k), labels)

    return tuned_ring_student(mixture, sd, schedule, gen, tune_steps=2000, draw=labelled,
                              exact=ExactRingByClass(mixture), num_classes=k, guide=guide)


@pytest.mark.slow  # about 50 s on this machine: `make test-all` runs it
def test_guidance_baked_in_maps_noise_to_the_guided_ode_endpoint():
    """Distilled from the exact ring's guided denoiser (w = 2), the student sampled unguided in 1 and 2 steps
    lands close to the guided ODE's endpoints (DOP853), far closer than the guided teacher's own DDIM, and
    reproduces guidance's shift of the endpoint away from the unguided ODE's."""
    mixture, schedule, gen = analytic.ring(), schedules.get("edm"), torch.Generator().manual_seed(0)
    sd = float(mixture.sample(20_000, gen).std())
    guided = cfg_denoiser(ExactRingByClass(mixture), 2.0)
    f = _distilled_ring_student(guided, mixture, sd, schedule, gen)
    s_max, mid, s_min = schedule.sigma_max, f.mid_sigma, schedule.sigma_min
    n = 256
    labels = torch.arange(n) % 8
    z = s_max * torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=f64)

    def guided_ode(x, start):
        return reference_ode(mixture, x, start, s_min, lambda xx, s: guided(xx, s, labels))

    def rms(a, b):
        return float((a.double() - b).pow(2).sum(1).mean().sqrt())

    end = guided_ode(z, s_max)
    one = f(z.float(), s_max, labels).double()
    x_mid = one + math.sqrt(mid**2 - s_min**2) * torch.randn(z.shape, generator=gen, dtype=f64)
    two = f(x_mid.float(), mid, labels).double()

    def ddim(grid):
        return samplers.sample(lambda x, s: guided(x, s, labels), z, torch.tensor(grid), "ddim")

    unguided = reference_ode(mixture, z, s_max, s_min, lambda xx, s: ExactRingByClass(mixture)(xx, s, labels))
    errors = {"student 1": rms(one, end), "student 2": rms(two, guided_ode(x_mid, mid)),
              "guided ddim 1": rms(ddim([s_max, 0.0]), end), "guided ddim 2": rms(ddim([s_max, mid, 0.0]), end)}
    # Guidance's effect on the endpoint (guided minus unguided ODE) and the share of it the student reproduces:
    # the least-squares coefficient of its displacement from the unguided endpoint on that shift (1: baked in,
    # 0: the student ignored the guided teacher). It averages the network's error over every sample and
    # direction, so it moves little with the CPU's float kernels (0.89-0.91 measured), unlike a raw distance.
    shift = end - unguided
    baked = float(((one.double() - unguided) * shift).sum() / shift.pow(2).sum())
    print("\nRMS distance to the guided ODE endpoint:", {k: round(v, 3) for k, v in errors.items()},
          f"guidance shift {rms(end, unguided):.3f}, share reproduced {baked:.3f}")
    assert errors["student 1"] < 0.25 * errors["guided ddim 1"]
    assert errors["student 2"] < 0.25 * errors["guided ddim 2"]
    assert 0.7 < baked < 1.3
    assert errors["student 1"] < rms(one, unguided)  # and nearer the guided endpoint than the unguided one


def test_cd_distill_resumes_bit_exactly_and_records_its_method(teacher, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    flags = [*STUDENT, "--lr-schedule", "constant", "--method", "cd", "--teacher-guidance", "2"]
    assert main(["distill", str(teacher), "--out", str(whole), "--steps", "16", *flags]) == 0
    assert main(["distill", str(teacher), "--out", str(split), "--steps", "8", *flags]) == 0
    assert main(["distill", str(teacher), "--out", str(split), "--steps", "16", "--resume", *flags]) == 0
    assert_same_state(whole, split)
    levels = run_info(whole)["consistency"]
    assert levels["method"] == "cd" and levels["teacher_guidance"] == 2.0
    f, _, config = load_run(whole)
    assert f.method == "cd" and config.ct_method == "cd"
    assert main(["sample", str(whole), "--steps", "1", "-n", "10", "--out", str(tmp_path / "s.png")]) == 0


@pytest.mark.parametrize("flags, message", [
    (["--teacher-guidance", "2"], "needs --method cd"),
    (["--method", "cd", "--teacher-guidance", "2", "--no-conditional"], "needs a class-conditional teacher"),
])
def test_distill_refuses_guidance_it_cannot_bake(teacher, tmp_path, capsys, flags, message):
    assert main(["distill", str(teacher), "--out", str(tmp_path / "s"), "--steps", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
