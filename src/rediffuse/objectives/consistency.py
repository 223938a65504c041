"""Consistency tuning of a trained Gaussian run (ECT, Geng et al. 2024); the formulas are in
`rediffuse.core.consistency_models`.

The student is the teacher's network, started from the teacher's EMA weights, inside the consistency function
f(x, sigma) = (sigma_min/sigma) x + (1 - sigma_min/sigma) D(x, sigma). Each step draws levels t (log-normal),
their partners r = r(t) from ECT's shrinking gap (its stage advances every `ct_stage_steps` steps, so every draw
is a function of the step and resume is exact), shared noise, and the label-dropout mask; the loss is ECT's
pseudo-Huber distance to the stop-gradient f(x_r, r), over t - r. No Jacobian-vector products: two forward
calls and one backward per step.

Method `cd` (consistency distillation, Song et al. 2023) keeps all of that but takes x_r from one Euler step of
the frozen teacher's ODE from x_t (one more forward call; two with guidance), so the student follows the
teacher's trajectories; with `teacher_guidance` w != 1 the teacher is classifier-free guided, and the student
learns the guided trajectories (guidance baked in: sample it at guidance 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse import checkpoint
from rediffuse.core import consistency_models as consistency
from rediffuse.core import schedules
from rediffuse.data.dataset import Data
from rediffuse.keys import need, opt
from rediffuse.errors import CheckpointError, ConfigError
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.core.spec import ModelSpec
from rediffuse.objectives.base import Batch, StepDraws, StepGenerators
from rediffuse.samplers.request import Grid
from rediffuse.objectives.gaussian import Gaussian, dropped_labels, null_label

@dataclass
class ConsistencyKeys:
    """The keys of consistency tuning (`rediffuse distill`)."""

    teacher: str | None = opt(None, "consistency objective: the teacher checkpoint whose EMA weights start the "
                                    "student (`rediffuse distill` sets it)")
    ct_method: str = opt("ect", "consistency tuning: ect (the student's own pairs, Geng et al. 2024) or cd (the "
                                "pair's second point from one Euler step of the teacher's ODE, Song et al. 2023)")
    teacher_guidance: float = opt(1.0, "consistency tuning, method cd: the teacher's classifier-free guidance "
                                       "scale, baked into the student (sample it unguided)")
    ct_stage_steps: int = opt(100, "consistency tuning: steps per stage of ECT's shrinking gap (it halves each "
                                   "stage)")
    ct_stages: int = opt(8, "consistency tuning: the number of gap stages (the last one lasts to the end)")
    ct_p_mean: float = opt(-1.1, "consistency tuning: mean of ln(t) for the noise levels (ECT's; in units of "
                                 "sigma_data / 0.5)")
    ct_p_std: float = opt(2.0, "consistency tuning: standard deviation of ln(t) (ECT's)")
    ct_huber_c: float | None = opt(None, "consistency tuning: the pseudo-Huber constant (default: iCT's "
                                         "0.00054 sqrt(dim) in units of sigma_data / 0.5)")
    mid_sigma: float | None = opt(None, "consistency model: the middle noise level of 2-step sampling (default: "
                                        "0.821 in units of sigma_data / 0.5, as in iCT and ECT)")


METHODS = ("ect", "cd")


def teacher_checkpoint(path: str | Path) -> Path:
    """The teacher's checkpoint folder: path itself, or a run folder's newest complete checkpoint."""
    path = Path(path)
    if (path / checkpoint.MANIFEST).is_file():
        return path
    found = checkpoint.latest(path) if path.is_dir() else None
    if found is None:
        raise ConfigError(f"teacher {str(path)!r} is not a run folder with a complete checkpoint; give the --out "
                          "folder of a trained Gaussian run")
    return found


def teacher_spec(path: Path) -> ModelSpec:
    """The model spec of a Gaussian teacher checkpoint (ConfigError for another objective or a student)."""
    try:
        meta = checkpoint.read_manifest(path)["meta"]
        objective, spec = meta["train_config"].get("objective", "gaussian"), ModelSpec.from_dict(meta["model"])
    except (CheckpointError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"teacher {str(path)!r} has no usable model description ({err})") from None
    if objective not in ("gaussian", "consistency"):
        raise ConfigError(f"teacher {str(path)!r} trained objective {objective!r}; consistency tuning needs a "
                          "Gaussian (denoising) run")
    return spec


def load_teacher_weights(net: nn.Module, path: Path) -> None:
    """Load a teacher checkpoint's EMA weights (hashes verified) into net (ConfigError if they do not fit)."""
    weights = checkpoint.load(path, parts=["ema"]).tensors["ema"]
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ConfigError(f"teacher {str(path)!r}: its EMA weights do not fit the network "
                          f"({str(err).splitlines()[0]})") from None


class Consistency(Gaussian):
    """Few-step generation by consistency tuning of a Gaussian teacher (`rediffuse distill`)."""

    name = "consistency"
    _teacher: nn.Module | None = None  # method cd: the frozen teacher, built on first use

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        super().check()
        c = self.config
        need(c.teacher is not None, "the consistency objective needs --teacher RUN (a trained Gaussian run); "
                                    "`rediffuse distill RUN --out NEW` sets it")
        for name in ("ct_stage_steps", "ct_stages"):
            need(isinstance(getattr(c, name), int) and getattr(c, name) >= 1,
                 f"{name} must be a positive integer, got {getattr(c, name)!r}")
        need(c.ct_p_std > 0, f"ct_p_std must be positive, got {c.ct_p_std}")
        need(c.ct_huber_c is None or c.ct_huber_c >= 0, f"ct_huber_c must be >= 0, got {c.ct_huber_c}")
        need(c.mid_sigma is None or c.mid_sigma > 0, f"mid_sigma must be positive, got {c.mid_sigma}")
        need(c.ct_method in METHODS, f"unknown ct_method {c.ct_method!r}; choose one of {', '.join(METHODS)}")
        need(c.teacher_guidance == 1.0 or c.ct_method == "cd",
             f"teacher_guidance {c.teacher_guidance} needs --method cd (ECT never calls the teacher)")
        need(c.teacher_guidance == 1.0 or c.conditional, "teacher_guidance needs a class-conditional teacher")

    def spec(self, data: Data) -> ModelSpec:
        """The teacher's spec (network, schedule, parameterisation, sigma_data) plus the consistency levels."""
        path = teacher_checkpoint(self.config.teacher)
        teacher = teacher_spec(path)
        if tuple(data.shape) != tuple(teacher.data.shape):
            raise ConfigError(f"data {self.config.data!r} has examples of shape {list(data.shape)}, the teacher "
                              f"{list(teacher.data.shape)}; distill on the teacher's data")
        schedule = schedules.from_config(teacher.schedule)
        unit = consistency.unit(teacher.sigma_data)
        mid = self.config.mid_sigma if self.config.mid_sigma is not None else consistency.MID_SIGMA * unit
        levels = {"method": self.config.ct_method, "sigma_min": schedule.sigma_min,
                  "mid_sigma": min(mid, schedule.sigma_max), "teacher": str(path),
                  "teacher_step": checkpoint.read_manifest(path).get("step"),
                  "teacher_guidance": self.config.teacher_guidance}
        return teacher.replace(data=dataclasses.replace(teacher.data, spec=self.config.data), consistency=levels)

    def initialise(self, net: nn.Module, spec: ModelSpec) -> None:
        """The teacher's EMA weights (hashes verified)."""
        load_teacher_weights(net, Path(spec.consistency["teacher"]))

    def model(self, spec: ModelSpec, net: nn.Module) -> consistency.ConsistencyFunction:
        """The consistency function f(x, sigma, cond) around net."""
        levels = spec.consistency
        return consistency.ConsistencyFunction(net, spec.parameterization, schedules.from_config(spec.schedule),
                                               spec.sigma_data, levels["sigma_min"], levels["mid_sigma"],
                                               levels.get("method", "ect"))

    def stage(self, step: int) -> int:
        """ECT's gap stage at a (0-based) step: one more every ct_stage_steps, capped at ct_stages - 1."""
        return min(step // self.config.ct_stage_steps, self.config.ct_stages - 1)

    def draw(self, model: consistency.ConsistencyFunction, batch: Batch, generators: StepGenerators
             ) -> ConsistencyDraws:
        """t [B] (log-normal), r = r(t) at this step's stage, shared noise like x, and the label-dropout mask."""
        x, c = batch.x, self.config
        t = consistency.sample_levels(len(x), model.sigma_data, model.sigma_min, model.schedule.sigma_max,
                                      c.ct_p_mean, c.ct_p_std, generator=generators.cpu("sigma"))
        r = consistency.gap_level(t, self.stage(generators.step), model.sigma_data, model.sigma_min)
        noise_gen = generators.device("noise")
        noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
        drop = None
        if null_label(model) is not None and batch.labels is not None and c.label_dropout > 0:
            drop = torch.rand(batch.labels.shape, generator=noise_gen, device=x.device) < c.label_dropout
        return ConsistencyDraws(t.to(x.device), r.to(x.device), noise, drop)

    def loss(self, model: consistency.ConsistencyFunction, batch: Batch, draws: ConsistencyDraws) -> Tensor:
        """ECT's per-sample loss (`consistency.consistency_loss`)."""
        cond = dropped_labels(model, batch, draws.drop)
        c = self.config.ct_huber_c
        if c is None:
            c = consistency.huber_constant(math.prod(batch.x.shape[1:]), model.sigma_data)
        return consistency.consistency_loss(model, batch.x, draws.t, draws.r, draws.noise, c, cond,
                                            self.teacher(model, batch.x.device))

    def teacher(self, model: consistency.ConsistencyFunction, device: torch.device) -> nn.Module | None:
        """The frozen teacher denoiser for method cd (built once from its EMA weights; guided when
        teacher_guidance != 1); None for ECT."""
        if self.config.ct_method != "cd":
            return None
        if self._teacher is None:
            path = teacher_checkpoint(self.config.teacher)
            spec = teacher_spec(path)
            with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the run's RNG alone
                net = self.build(spec)
            load_teacher_weights(net, path)
            den: nn.Module = super().model(spec, net)
            if self.config.teacher_guidance != 1.0:
                den = cfg_denoiser(den, self.config.teacher_guidance)
            self._teacher = den.to(device).eval().requires_grad_(False)
        return self._teacher

    def preview_sampling(self, model: consistency.ConsistencyFunction, steps: int) -> tuple[str, int, Grid]:
        """Two-step consistency sampling."""
        return "consistency", 2, few_step_grid(model.schedule.sigma_max, model.mid_sigma, model.sigma_min, 2)


@dataclass(frozen=True, eq=False)
class ConsistencyDraws(StepDraws):
    """One step's randomness: levels t [B] and r(t) [B], noise shared by the pair, the label-dropout mask."""

    t: Tensor
    r: Tensor
    noise: Tensor
    drop: Tensor | None = None


def few_step_grid(sigma_max: float, mid_sigma: float, sigma_min: float, steps: int) -> Grid:
    """The levels of `steps`-step consistency sampling, with the sampler's sigma_min."""
    return Grid(sigmas=consistency.sampling_sigmas(sigma_max, mid_sigma, steps), options={"sigma_min": sigma_min})


def run_grid(spec: ModelSpec, sampler: str | None, steps: int | None) -> Grid:
    """The levels a run's sampler needs: the few-step grid for a consistency run sampled with the consistency
    sampler, else the schedule's (an empty Grid)."""
    levels = spec.consistency
    if levels is None or sampler != "consistency":
        return Grid()
    sigma_max = schedules.from_config(spec.schedule).sigma_max
    return few_step_grid(sigma_max, levels["mid_sigma"], levels["sigma_min"], int(steps or 2))


def run_sampling(spec: ModelSpec, sampler: str, steps: int) -> dict[str, Any]:
    """`run_grid` as `generation.generate` options (nothing for the schedule's grid)."""
    grid = run_grid(spec, sampler, steps)
    return {} if grid.sigmas is None else {"sampler": "consistency", "sigmas": grid.sigmas, **grid.options}


def default_sampler(spec: ModelSpec, steps: int) -> tuple[str, int]:
    """(sampler, steps) a run samples with by default: consistency at 2 steps for a student, else Heun at steps."""
    return ("consistency", 2) if spec.consistency else ("heun", steps)
