"""Step grids tuned to the model at hand: minimise a sampler's error against a high-accuracy solution.

The free parameters are the log-sigma increments of the grid (a softmax, so the grid stays descending and
inside [sigma_min, sigma_max]); the first level is sigma_max and the grid ends in 0. The objective is the
RMS distance between the sampler's output and a reference ODE solution from the same starting noise, on a
few tuning batches; scipy's derivative-free Powell search minimises it. Grids are saved in the run folder
(`grids.json`) and reused by `rediffuse sample --spacing tuned`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from . import samplers
from .schedules import append_zero, karras_sigmas

GRIDS_FILE = "grids.json"
# Samplers whose NFE per step is 2 (the final step to 0 takes 1): they get half as many steps for an NFE.
TWO_EVAL_SAMPLERS = {"heun", "dpmpp-2s"}


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Grid steps that spend at most `nfe` network evaluations with this sampler."""
    return max(1, (nfe + 1) // 2) if sampler in TWO_EVAL_SAMPLERS else nfe


# Evaluation noise (`sampling.sample_generators`: `sample`, `bench-samplers`) comes from one generator per sample,
# seeded seed * 1_000_003 + i; torch's CPU generator keeps only the low 32 bits of a seed. Tuning noise is one
# stream from a generator seeded at the top of that range, TUNING_SEED - seed, which no evaluation generator of
# a practical seed and sample count starts from, so a grid is never scored on the noise it was tuned on.
TUNING_SEED = 2**32 - 1


def tuning_noise(seed: int, n: int, shape: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """n standard-normal starting points for grid tuning, disjoint from the evaluation noise."""
    generator = torch.Generator().manual_seed(TUNING_SEED - seed)
    return torch.randn((n, *shape), generator=generator).to(device)


@torch.no_grad()
def reference_solution(denoiser: Callable[..., Tensor], x: Tensor, sigma_max: float, sigma_min: float,
                       steps: int = 256, cond: Tensor | None = None) -> Tensor:
    """A high-accuracy probability-flow ODE solution (Heun, 2*steps-1 evaluations, rho=7 grid)."""
    grid = append_zero(karras_sigmas(steps, sigma_min, sigma_max))
    return samplers.sample(denoiser, x, grid, "heun", cond=cond)


def grid_from_params(theta: np.ndarray, sigma_min: float, sigma_max: float) -> Tensor:
    """A descending grid from sigma_max (inclusive) toward sigma_min (exclusive), then 0."""
    weights = np.exp(theta - theta.max())
    frac = np.cumsum(weights / weights.sum())[:-1]
    log_hi, log_lo = math.log(sigma_max), math.log(sigma_min)
    levels = np.concatenate([[sigma_max], np.exp(log_hi + frac * (log_lo - log_hi))])
    return append_zero(torch.tensor(levels, dtype=torch.float64))


def params_from_grid(sigmas: Tensor, sigma_min: float) -> np.ndarray:
    """The softmax parameters that reproduce a grid (its log-sigma gaps, the last gap down to sigma_min)."""
    levels = sigmas[sigmas > 0].log().tolist() + [math.log(sigma_min)]
    gaps = np.maximum(-np.diff(levels), 1e-6)
    return np.log(gaps)


@torch.no_grad()
def rms_error(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, sigmas: Tensor, sampler: str,
              cond: Tensor | None = None) -> float:
    """RMS distance between a sampler's output on `sigmas` and the reference solution."""
    out = samplers.sample(denoiser, x, sigmas, sampler, cond=cond)
    return float((out - ref).double().pow(2).mean().sqrt())


def optimize_grid(denoiser: Callable[..., Tensor], x: Tensor, sampler: str, steps: int, sigma_min: float,
                  sigma_max: float, ref: Tensor | None = None, cond: Tensor | None = None,
                  max_evals: int = 300, init: Tensor | None = None) -> tuple[Tensor, float, float]:
    """Tune a `steps`-step grid for `sampler` on starting noise x; returns (grid, initial error, tuned error).

    The search starts from `init` (default: the Karras rho=7 grid).
    """
    if ref is None:
        ref = reference_solution(denoiser, x, sigma_max, sigma_min, cond=cond)
    if init is None:
        init = append_zero(karras_sigmas(steps, sigma_min, sigma_max))
    if len(init) != steps + 1:
        raise ValueError(f"initial grid has {len(init) - 1} steps, expected {steps}")
    theta0 = params_from_grid(init, sigma_min)

    def objective(theta: np.ndarray) -> float:
        err = rms_error(denoiser, x, ref, grid_from_params(theta, sigma_min, sigma_max), sampler, cond)
        return math.log(err) if math.isfinite(err) and err > 0 else 1e3

    start = objective(theta0)
    result = minimize(objective, theta0, method="Powell", options={"maxfev": max_evals, "xtol": 1e-3,
                                                                       "ftol": 1e-4})
    best = result.x if result.fun < start else theta0
    return grid_from_params(best, sigma_min, sigma_max), math.exp(start), math.exp(min(result.fun, start))


def save_grid(run_dir: str | os.PathLike, sampler: str, grid: Tensor, meta: dict | None = None) -> Path:
    """Store a tuned grid in the run's grids.json (atomically), keyed by sampler and step count."""
    path = Path(run_dir) / GRIDS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = {"sigmas": grid.tolist(), **(meta or {})}
    data.setdefault(sampler, {})[str(len(grid) - 1)] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def load_grid(run_dir: str | os.PathLike, sampler: str, steps: int) -> Tensor:
    """A tuned grid saved for this sampler and step count; a clear error names the tuning command if absent."""
    path = Path(run_dir) / GRIDS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    entry = data.get(sampler, {}).get(str(steps))
    if entry is None:
        raise FileNotFoundError(f"no tuned {steps}-step grid for {sampler} in {path}; run "
                                f"`rediffuse tune-grid {run_dir} --sampler {sampler} --steps {steps}` first")
    return torch.tensor(entry["sigmas"], dtype=torch.float64)
