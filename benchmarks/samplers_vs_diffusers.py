"""Our samplers vs diffusers' schedulers on exact mixture denoisers, plus per-step overhead.

Both sides run the same eps-model: the exact denoiser of a Gaussian mixture expressed as a DDPM-linear
(T=1000) eps-prediction model, from the same x_T ~ N(0, I). Error: RMS distance to the probability-flow
ODE solution (scipy DOP853, rtol 1e-10) from the same noise. diffusers' schedulers get the settings a
careful user would choose (trailing timesteps, no clipping; Karras sigmas where offered). Ours: every
deterministic sampler on every standard grid, plus grids tuned on separate noise (a pool of draws solved by our
own reference solver; Powell searches from the two best grids of a coarse pass over a few-parameter family, on a
stratified batch of it, the draws the default grid gets most wrong plus a weighted random rest; the result best on
the whole pool wins; the pool is large because with fewer draws the search fits the few that end off mode), and,
for three samplers, tuned grids whose first step is the closed-form flow of a Gaussian fitted to 20,000 of the
model's own samples drawn from separate noise (`rediffuse.tuning.teleport`; searches from a low and a high landing
level), for two with the multistep history warm-started from that Gaussian. iPNDM's teleported grid is also run
with learned coefficients, and with the Gaussian's jump corrected by an affine map fitted to the model's own flow
from the pool's first three quarters (`teleport.fit_jump`, kept if better on the last quarter; then with
coefficients learned for it). All of ours is `rediffuse.tuning.pipeline`, as `rediffuse tune-grid` runs it, and each
configuration is a `SamplingPlan`. Nothing of ours sees the evaluation noise or the mixture's parameters.
"Off mode" counts the samples whose nearest mixture component differs from the reference's: on multimodal
data they dominate the RMS, so n must be large enough to count them, and the summary gives the ratio's 95%
paired-bootstrap interval over the evaluation draws.

    python benchmarks/samplers_vs_diffusers.py [--n 4096] [--nfe 5 10 20] [--problems ring8 mix64d]
        [--tune-pool 32768] [--tune-n 1024] [--tune-evals 60] [--tune-starts bump] [--fresh 32768]
"""

from __future__ import annotations

import argparse
import math
import time
import types
from functools import partial
from typing import Callable

import torch
from scipy.integrate import solve_ivp
from torch import nn

from rediffuse import samplers
from rediffuse.truth import analytic
from rediffuse.foreign import from_diffusers
from rediffuse.tuning import grids as tg
from rediffuse.tuning import pipeline
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.reference import reference_solution
from rediffuse.tuning.teleport import GaussianFlow

TUNED = ["dpmpp-2m", "dpmpp-3m", "unipc-bh2", "ipndm"]  # the others never came out best when tuned
TELEPORTED = ["unipc-bh2", "ipndm"]  # also tuned with a teleported first step (dpmpp-3m: only warm, which beat it)
WARM_STARTED = ["dpmpp-3m", "unipc-bh2"]  # and teleported with the Gaussian's history (best at NFE 5)
LEARNED = "ipndm"  # its teleported tuned grid also gets learned coefficients (`rediffuse.tuning.coefficients`)


class MixtureEps(nn.Module):
    """The exact mixture denoiser as a diffusers-style eps-prediction model on the DDPM schedule."""

    def __init__(self, mixture: analytic.GaussianMixture, schedule):
        super().__init__()
        self.mixture, self.schedule, self.calls = mixture, schedule, 0

    def forward(self, sample: torch.Tensor, timestep) -> types.SimpleNamespace:
        self.calls += 1
        t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        sigma = self.schedule.sigma(t).to(sample.device)
        x = sample.double() * (1 + sigma[:, None] ** 2).sqrt() if t.numel() > 1 else sample.double() * float(
            (1 + sigma**2).sqrt())
        sig = sigma if t.numel() > 1 else float(sigma)
        eps = (x - self.mixture.denoise(x, sig)) / (sigma[:, None] if t.numel() > 1 else float(sigma))
        return types.SimpleNamespace(sample=eps.to(sample.dtype))


def reference(mixture, x_ve: torch.Tensor, sigma_max: float, sigma_end: float = 1e-3) -> torch.Tensor:
    """The PF-ODE solution from sigma_max to sigma_end by DOP853 (rtol 1e-10), then the exact D at sigma_end."""
    def rhs(u, y):
        x = torch.from_numpy(y).reshape(x_ve.shape)
        return (x - mixture.denoise(x, math.exp(u))).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(sigma_max), math.log(sigma_end)), x_ve.double().reshape(-1).numpy(),
                    method="DOP853", rtol=1e-10, atol=1e-10)
    return mixture.denoise(torch.from_numpy(sol.y[:, -1]).reshape(x_ve.shape), sigma_end)


def diffusers_schedulers(diffusers) -> dict:
    """Name -> factory for diffusers' schedulers with careful settings."""
    common = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
              "timestep_spacing": "trailing"}
    return {
        "DDIM": lambda: diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True),
        "DPM++2M": lambda: diffusers.DPMSolverMultistepScheduler(**common, solver_order=2, final_sigmas_type="zero"),
        "DPM++2M-karras": lambda: diffusers.DPMSolverMultistepScheduler(
            **common, solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero"),
        "DPM++3M": lambda: diffusers.DPMSolverMultistepScheduler(**common, solver_order=3, final_sigmas_type="zero"),
        "UniPC-bh2": lambda: diffusers.UniPCMultistepScheduler(**common, solver_type="bh2", final_sigmas_type="zero"),
        "UniPC-bh1": lambda: diffusers.UniPCMultistepScheduler(**common, solver_type="bh1", final_sigmas_type="zero"),
        "DEIS": lambda: diffusers.DEISMultistepScheduler(**common, solver_order=3),
        "Euler": lambda: diffusers.EulerDiscreteScheduler(**common),
        "Euler-karras": lambda: diffusers.EulerDiscreteScheduler(**common, use_karras_sigmas=True),
        "Heun": lambda: diffusers.HeunDiscreteScheduler(**common),
        "Heun-karras": lambda: diffusers.HeunDiscreteScheduler(**common, use_karras_sigmas=True),
    }


@torch.no_grad()
def run_diffusers(model: MixtureEps, scheduler, x_T: torch.Tensor, nfe: int) -> tuple[torch.Tensor, int] | None:
    """Run a diffusers scheduler with the most steps whose model calls fit in `nfe`."""
    for steps in range(nfe, 0, -1):
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) <= nfe:
            break
    else:
        return None
    x = x_T * scheduler.init_noise_sigma
    model.calls = 0
    for t in scheduler.timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x, model.calls


@torch.no_grad()
def run_ours(denoiser, model: MixtureEps, x_T: torch.Tensor, plan: SamplingPlan) -> tuple:
    """(the plan's samples from x_T, network calls spent)."""
    model.calls = 0
    x = x_T * denoiser.schedule.prior_std(float(plan.sigmas[0]))
    return plan.run(denoiser, x), model.calls


@torch.no_grad()
def teleport_fit(denoiser, dim: int, n: int = 20000, seed: int = 2) -> GaussianFlow:
    """The Gaussian fit of n of the model's own samples (DPM-Solver++ 3M, 50 NFE, log-SNR grid, separate noise).

    The mean and covariance must be accurate: a fit to the 1024 tuning samples alone misplaces the landing
    point enough to send some samples to the wrong mode.
    """
    sch = denoiser.schedule
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64) * sch.prior_std(sch.sigma_max)
    return GaussianFlow.fit(samplers.sample(denoiser, x, sch.sigmas(50, "logsnr"), "dpmpp-3m"))


def ratio_interval(ours: torch.Tensor, theirs: torch.Tensor, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of RMS(ours) / RMS(theirs) from per-sample squared errors on the same draws.

    On multimodal data a handful of off-mode samples carry most of the error, so the ratio of one evaluation set
    is uncertain; resampling the draws (both sides together) shows by how much (Efron & Tibshirani 1993).
    """
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, len(ours), (resamples, len(ours)), generator=g)
    ratios = (ours[index].mean(1) / theirs[index].mean(1)).sqrt()
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=ratios.dtype)).tolist()
    return low, high


def benchmark_problem(name: str, n: int, nfes: list[int], diffusers, tune_evals: int, tune_n: int,
                      tune_pool: int, tune_starts: list[str], learn_pool: int, learn_iters: int,
                      learn_batch: int, fresh: int = 0) -> dict:
    """Errors of every scheduler/sampler at each NFE on one mixture problem (and each side's best on fresh draws)."""
    mixture = analytic.preset(name)
    sched0 = diffusers.DDPMScheduler(beta_schedule="linear")
    model = MixtureEps(mixture, None)
    denoiser = from_diffusers(model, sched0.config)
    model.schedule = denoiser.schedule
    sch = denoiser.schedule
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, mixture.dim, generator=g, dtype=torch.float64)
    x_tune = torch.randn(tune_pool, mixture.dim, generator=g, dtype=torch.float64)  # the stream after x_T
    x_ve = x_tune * sch.prior_std(sch.sigma_max)
    x_learn = torch.cat([x_ve, torch.randn(learn_pool, mixture.dim, generator=g, dtype=torch.float64)
                         * sch.prior_std(sch.sigma_max)])  # the tuning pool and more: coefficients need many draws
    start = time.time()
    ref = reference(mixture, x_T * sch.prior_std(sch.sigma_max), sch.sigma_max)
    ref_learn = reference_solution(denoiser, x_learn, sch.sigma_max, sch.sigma_min)  # ours, as `tune-grid` does
    ref_tune = ref_learn[:tune_pool]
    mode = mixture.component(ref)
    print(f"[{name}] reference solutions in {time.time() - start:.0f}s")

    def score(out: tuple) -> tuple[float, int, int, torch.Tensor]:
        per_sample = (out[0].double() - ref.double()).pow(2).mean(1)  # kept for the ratio's bootstrap interval
        return float(per_sample.mean().sqrt()), out[1], int((mixture.component(out[0]) != mode).sum()), per_sample

    flow = teleport_fit(denoiser, mixture.dim)
    result: dict = {"ours": {}, "theirs": {}, "fresh": {}}
    runs: dict = {}  # (side, label, nfe) -> the configuration as a function of the starting noise

    def record(side: str, key: tuple, run: Callable[[torch.Tensor], tuple | None]) -> None:
        out = run(x_T)
        if out is not None:
            result[side][key] = score(out)
            runs[(side, *key)] = run

    for label, make in diffusers_schedulers(diffusers).items():
        for nfe in nfes:
            record("theirs", (label, nfe), lambda x, make=make, nfe=nfe: run_diffusers(model, make(), x, nfe))
    deterministic = [s for s in samplers.SAMPLERS if s not in samplers.STOCHASTIC and s != "ddim"]
    for sampler in deterministic:
        for nfe in nfes:
            steps = tg.steps_for_nfe(sampler, nfe)
            for spacing in ("default", "karras", "logsnr", "uniform"):
                record("ours", (f"{sampler}/{spacing}", nfe),
                       partial(run_ours, denoiser, model, plan=SamplingPlan.standard(sch, sampler, steps, spacing)))
            variants = (("tuned", None, False, TUNED), ("teleport+tuned", flow, False, TELEPORTED),
                        ("teleport+warm+tuned", flow, True, WARM_STARTED))
            for label, teleport, warm, kind in variants:
                if sampler in kind:  # the search result best on the pool wins
                    params = steps + (teleport is not None)  # Powell needs evaluations in proportion
                    plan = pipeline.tune(denoiser, sch, sampler, steps, x_ve, ref=ref_tune, batch=tune_n,
                                         max_evals=min(tune_evals * params, 700), starts=tune_starts,
                                         teleport=teleport, warm_start=warm)
                    record("ours", (f"{sampler}/{label}", nfe), partial(run_ours, denoiser, model, plan=plan))
                    if sampler == LEARNED and label == "teleport+tuned":
                        jumped = pipeline.with_fitted_jump(plan, denoiser, x_ve, ref_tune)
                        record("ours", (f"{sampler}/{label}+jump", nfe),
                               partial(run_ours, denoiser, model, plan=jumped))
                        for suffix, base in (("", plan), ("+jump", jumped)):
                            learned = pipeline.with_learned_coefficients(base, denoiser, x_learn, ref_learn,
                                                                         iters=learn_iters, batch=learn_batch)
                            record("ours", (f"{sampler}/{label}{suffix}+learned", nfe),
                                   partial(run_ours, denoiser, model, plan=learned))
    if fresh:
        result["fresh"] = fresh_scores(result, runs, denoiser, mixture.dim, fresh, nfes)
    return result


def best(result: dict, side: str, nfe: int) -> tuple[float, str, int, torch.Tensor]:
    """(RMS, label, off-mode count, per-sample errors) of one side's configuration with the least RMS at this NFE."""
    return min(((v[0], label, v[2], v[3]) for (label, k), v in result[side].items() if k == nfe
                and math.isfinite(v[0])), key=lambda r: r[0])


@torch.no_grad()
def fresh_scores(result: dict, runs: dict, denoiser, dim: int, n: int, nfes: list[int], seed: int = 1) -> dict:
    """NFE -> each side's best configuration (label, per-sample squared errors) run again on n fresh draws.

    The evaluation draws pick the best configurations, and on multimodal data a few off-mode samples decide the
    ratio on them; fresh draws (a generator no other draw comes from; references by our own solver, as for the
    tuning pool) show what new noise gets.
    """
    sch = denoiser.schedule
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = reference_solution(denoiser, x * sch.prior_std(sch.sigma_max), sch.sigma_max, sch.sigma_min)
    scores = {}
    for nfe in nfes:
        scores[nfe] = {}
        for side in ("theirs", "ours"):
            label = best(result, side, nfe)[1]
            out = runs[(side, label, nfe)](x)[0].double()
            scores[nfe][side] = (label, (out - ref).pow(2).reshape(n, -1).mean(1))
    return scores


def print_table(name: str, result: dict, nfes: list[int]) -> list[str]:
    lines = [f"\n### {name}: RMS error vs the reference ODE solution (NFE actually used in brackets)\n"]
    for side in ("theirs", "ours"):
        lines.append(f"| {'diffusers' if side == 'theirs' else 'rediffuse'} | " + " | ".join(
            f"NFE {k}" for k in nfes) + " |")
        lines.append("|---" * (len(nfes) + 1) + "|")
        labels = sorted({k[0] for k in result[side]})
        for label in labels:
            cells = [f"{result[side][(label, k)][0]:.2e} ({result[side][(label, k)][1]})"
                     if (label, k) in result[side] else "-" for k in nfes]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("| NFE | best diffusers (off mode) | best rediffuse (off mode) | ratio (ours/theirs) | 95% interval |")
    lines.append("|---|---|---|---|---|")
    for k in nfes:
        t, o = (best(result, side, k) for side in ("theirs", "ours"))
        low, high = ratio_interval(o[3], t[3])
        lines.append(f"| {k} | {t[1]} {t[0]:.2e} ({t[2]}) | {o[1]} {o[0]:.2e} ({o[2]}) | {o[0] / t[0]:.3f} | "
                     f"{low:.3f}-{high:.3f} |")
    if result["fresh"]:
        n = len(next(iter(result["fresh"].values()))["ours"][1])
        lines += ["", f"The same best configurations on {n} fresh draws (references by our own solver):", "",
                  "| NFE | diffusers | rediffuse | ratio (ours/theirs) | 95% interval |", "|---|---|---|---|---|"]
        for k in nfes:
            (tl, te), (ol, oe) = result["fresh"][k]["theirs"], result["fresh"][k]["ours"]
            low, high = ratio_interval(oe, te)
            ratio = float((oe.mean() / te.mean()).sqrt())
            lines.append(f"| {k} | {tl} {float(te.mean().sqrt()):.2e} | {ol} {float(oe.mean().sqrt()):.2e} | "
                         f"{ratio:.3f} | {low:.3f}-{high:.3f} |")
    print("\n".join(lines))
    return lines


@torch.no_grad()
def overhead(diffusers, steps: int = 50, repeats: int = 3) -> tuple[float, float]:
    """Seconds per step of everything but the network (a constant-output net) on a 64x1x28x28 batch."""
    out = torch.randn(64, 1, 28, 28)

    class Constant(nn.Module):
        def forward(self, sample, timestep, cond=None):
            return types.SimpleNamespace(sample=out)

    config = diffusers.DPMSolverMultistepScheduler(timestep_spacing="trailing").config
    denoiser = from_diffusers(Constant(), config)
    grid = denoiser.schedule.sigmas(steps)
    x_T = torch.randn(64, 1, 28, 28)
    best_ours = best_theirs = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        samplers.sample(denoiser, x_T * 157.0, grid, "dpmpp-2m")
        best_ours = min(best_ours, (time.perf_counter() - t) / steps)
        sched = diffusers.DPMSolverMultistepScheduler.from_config(config)
        model = Constant()
        t = time.perf_counter()
        sched.set_timesteps(steps)
        x = x_T.clone()
        for ts in sched.timesteps:
            x = sched.step(model(sched.scale_model_input(x, ts), ts).sample, ts, x).prev_sample
        best_theirs = min(best_theirs, (time.perf_counter() - t) / steps)
    return best_ours, best_theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="evaluation samples per problem")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--problems", nargs="+", default=["ring8", "mix64d"])
    parser.add_argument("--tune-evals", type=int, default=60,
                        help="objective evaluations per search start and grid parameter (at most 700 per start)")
    parser.add_argument("--tune-pool", type=int, default=32768,
                        help="tuning draws solved by our reference solver (separate from the n evaluated)")
    parser.add_argument("--tune-n", type=int, default=1024, help="the stratified tuning batch drawn from the pool")
    parser.add_argument("--tune-starts", nargs="+", default=["bump"], choices=list(tg.START_SPACINGS),
                        help="grids the searches start from (bump: a coarse family search)")
    parser.add_argument("--learn-pool", type=int, default=0,
                        help="draws added to the tuning pool to fit ipndm's coefficients on (a quarter of all "
                             "held out)")
    parser.add_argument("--learn-iters", type=int, default=200, help="Adam steps of the coefficient fit")
    parser.add_argument("--learn-batch", type=int, default=2048, help="draws per Adam step")
    parser.add_argument("--fresh", type=int, default=0,
                        help="also run each side's best configuration per NFE on this many fresh draws")
    parser.add_argument("--out", default=None, help="also write the Markdown tables here")
    args = parser.parse_args()
    import diffusers  # the peer: `pip install -e .[bench]`

    torch.set_num_threads(2)
    lines = []
    for name in args.problems:
        result = benchmark_problem(name, args.n, args.nfe, diffusers, args.tune_evals, args.tune_n,
                                   args.tune_pool, args.tune_starts, args.learn_pool, args.learn_iters,
                                   args.learn_batch, args.fresh)
        lines += print_table(name, result, args.nfe)
    ours, theirs = overhead(diffusers)
    msg = (f"\nPer-step overhead (64x1x28x28, constant network): rediffuse {ours * 1e6:.0f} us, "
           f"diffusers DPMSolverMultistepScheduler {theirs * 1e6:.0f} us, ratio {ours / theirs:.3f}")
    print(msg)
    lines.append(msg)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
