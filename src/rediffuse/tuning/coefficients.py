"""iPNDM coefficients learned for the model at hand: a bespoke multistep solver on a fixed step grid.

iPNDM's step is x_next = x + (sigma_next - sigma) sum_j c_j d_(i-j), with the equal-step Adams-Bashforth
coefficients c. Here each step gets its own c, fitted by gradient descent (Adam, through the sampler and the
network) to the reference solutions of a pool of starting points, as in bespoke solvers (Shaul et al. 2023,
"Bespoke Solvers for Generative Flow Models") and S4S (Frankel et al. 2025). Every row keeps sum_j c_j = 1, so a
constant slope is still integrated exactly. The pool's last quarter is held out (`grids.held_out_split`): the fit
keeps the coefficients that are best on it, and gives back the fixed ones if it never beats them. No extra network
evaluation is spent at sampling time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor

from rediffuse.samplers.multistep import ADAMS_BASHFORTH
from rediffuse.tuning import grids as tuned_grids
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.teleport import GaussianFlow

ORDER = 4  # iPNDM's default order: the coefficient rows have this many entries


def history_lengths(steps: int, warm_start: bool = False, order: int = ORDER) -> list[int]:
    """How many slopes iPNDM holds at each step: 1, 2, ... up to `order` (all of them from the start when warm)."""
    return [order if warm_start else min(i + 1, order) for i in range(steps)]


def standard_coefficients(steps: int, warm_start: bool = False, order: int = ORDER) -> Tensor:
    """iPNDM's own coefficients as a [steps, order] table (zeros past each step's history)."""
    table = torch.zeros(steps, order, dtype=torch.float64)
    for i, k in enumerate(history_lengths(steps, warm_start, order)):
        table[i, :k] = torch.tensor(ADAMS_BASHFORTH[k - 1], dtype=torch.float64)
    return table


def _with_offsets(base: Tensor, offsets: Tensor, lengths: list[int]) -> Tensor:
    """base plus offsets on the older slopes of each row's history; the newest absorbs them so rows keep their sum."""
    mask = torch.tensor([[0 < j < k for j in range(base.shape[1])] for k in lengths])
    older = offsets * mask
    return base + older - torch.nn.functional.pad(older.sum(1, keepdim=True), (0, base.shape[1] - 1))


def _mse(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, plan: SamplingPlan, cond: Tensor | None) -> Tensor:
    """The plan's mean squared error against ref, differentiable in its coefficients."""
    return (plan.run(denoiser, x, cond=cond) - ref).double().pow(2).mean()


def fit_coefficients(denoiser: Callable[..., Tensor], x: Tensor, ref: Tensor, sigmas: Tensor, *,
                     teleport: GaussianFlow | None = None, warm_start: bool = False, cond: Tensor | None = None,
                     iters: int = 300, lr: float = 1e-2, batch: int = 1024, seed: int = 0
                     ) -> tuple[Tensor, float, float]:
    """Fit iPNDM's per-step coefficients on this grid to the reference solutions `ref` of the starting points x.

    Returns (coefficients [steps, 4], held-out RMS error with the fixed coefficients, with the returned ones).
    The sampler steps are the grid's (after the teleported first step, if any); x's last quarter is held out.
    """
    steps = len(sigmas) - 1 - (teleport is not None)
    if len(x) < 8:
        raise ValueError(f"fitting coefficients needs at least 8 starting points, got {len(x)}")
    warm = warm_start and teleport is not None and steps > 1  # one step to 0 has no history to warm
    lengths = history_lengths(steps, warm)
    base = standard_coefficients(steps, warm)
    split = tuned_grids.held_out_split(len(x))
    plan = SamplingPlan("ipndm", sigmas, teleport, warm_start)
    train, held = slice(0, split), slice(split, None)
    held_cond = None if cond is None else cond[held]

    def score(table: Tensor) -> float:
        return tuned_grids.rms_error(denoiser, x[held], ref[held], sigmas, "ipndm", held_cond, teleport,
                                     warm_start=warm_start, coefficients=table)

    best, best_err = base, score(base)
    fixed_err = best_err
    offsets = torch.zeros_like(base, requires_grad=True)
    opt = torch.optim.Adam([offsets], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(seed)
    checks = max(1, iters // 10)
    for it in range(iters):
        index = torch.randint(0, split, (min(batch, split),), generator=gen).to(x.device)
        c = None if cond is None else cond[train][index]
        loss = _mse(denoiser, x[train][index], ref[train][index],
                    replace(plan, coefficients=_with_offsets(base, offsets, lengths)), c)
        (grad,) = torch.autograd.grad(loss, [offsets])  # not into the network's own parameters
        offsets.grad = grad * min(1.0, 1.0 / max(float(grad.norm()), 1e-12))  # clipped: rare draws give huge steps
        opt.step()
        schedule.step()
        if (it + 1) % checks == 0 or it + 1 == iters:
            table = _with_offsets(base, offsets, lengths).detach()
            err = score(table)
            if err < best_err:
                best, best_err = table, err
    return best, fixed_err, best_err
