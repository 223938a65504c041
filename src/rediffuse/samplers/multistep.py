"""Linear multistep samplers in sigma time, and the weight arithmetic every multistep sampler shares.

On the probability-flow ODE dx/dsigma = d(x, sigma) = (x - D(x, sigma)) / sigma, an Adams-Bashforth step
integrates the polynomial through the last k slopes over the next interval:
x_{i+1} = x_i + sum_j w_j d_{i-j}, w_j = integral over [sigma_i, sigma_{i+1}] of the Lagrange basis l_j.
`lms` computes these weights exactly for the actual (non-uniform) grid; `ipndm` uses the fixed
equal-step Adams-Bashforth coefficients (Zhang & Chen 2023, "improved PNDM"), which are exact only on
uniform grids: on a smoothly non-uniform grid (Karras) they leave an O(h^3) local error, so iPNDM converges
at order 2 there, although at 10-20 NFE it is often the most accurate sampler in this package.
Both start with lower orders while the history fills up (or from a `History` hook); the step to sigma = 0 needs no
special case. Their first step, which has a single slope, can be a `FirstStep` hook instead (after a teleport,
`GaussianFlow.exp_euler`; `rediffuse.tuning.plan` does so unless warm-started).
`ipndm` also takes per-step coefficients in place of the fixed ones (`rediffuse.tuning.coefficients` fits them
to the model at hand); as a tensor that requires grad, they keep the whole run differentiable.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .common import Callback, Denoiser, FirstStep, Generator, History, observed, steps, warm_history

# Equal-step Adams-Bashforth coefficients, newest slope first (orders 1 to 4).
ADAMS_BASHFORTH = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


def interp_weights(nodes: Sequence[float], moments: Sequence[float]) -> list[float]:
    """Weights w with sum_j w_j f(u_j) = the functional with moments m_k = L(u^k), exact on polynomials.

    For the interpolating polynomial through (u_j, f_j), L(P) = sum_k c_k m_k with c = V^-1 f (V the
    Vandermonde matrix of the nodes), so w = V^-T m: one tiny float64 solve on the host per step.
    """
    vander = np.vander(np.asarray(nodes, dtype=np.float64), len(nodes), increasing=True)
    return np.linalg.solve(vander.T, np.asarray(moments, dtype=np.float64)).tolist()


def combine(a: float, x: Tensor, weights: Sequence[float], values: Sequence[Tensor]) -> Tensor:
    """a * x + sum_j weights[j] * values[j] (zero weights skipped)."""
    out = a * x
    for w, v in zip(weights, values):
        if w:
            out.add_(v, alpha=w)
    return out


def push(history: list, value, size: int) -> None:
    """Put value in front of history (newest first) and keep at most `size` entries."""
    history.insert(0, value)
    del history[size:]


def _sigma_multistep(denoiser: Denoiser, x: Tensor, sigmas: Tensor, order: int, fixed: bool,
                     callback: Callback | None, cond: Tensor | None, history: History | None,
                     coefficients: Tensor | None = None, first_step: FirstStep | None = None) -> Tensor:
    """Adams-Bashforth in sigma with lower orders while the history fills up (or a `warm_history`).

    `coefficients` [steps, order], newest slope first, replace the fixed ones: step i uses the first k entries
    of row i while the history holds k slopes. With `first_step` and no history hook, the first step, which has one
    slope only, is that hook's instead.
    """
    if not 1 <= order <= (4 if fixed else 8):
        raise ValueError(f"order must be between 1 and {4 if fixed else 8}, got {order}")
    if coefficients is not None and tuple(coefficients.shape) != (len(sigmas) - 1, order):
        raise ValueError(f"coefficients must have one row per step and one column per order, "
                         f"[{len(sigmas) - 1}, {order}]; got {list(coefficients.shape)}")
    ts: list[float] = []
    ds: list[Tensor] = []
    for level, x_level, denoised in warm_history(history, x, sigmas, order - 1, log_spaced=False):
        push(ts, level, order)
        push(ds, (x_level - denoised) / level, order)
    for i, sigma, sigma_next in steps(sigmas, skip_repeats=True):  # no repeated history nodes
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        push(ts, sigma, order)
        push(ds, (x - denoised) / sigma, order)
        dt = sigma_next - sigma
        if first_step is not None and len(ds) == 1 and sigma_next > 0:
            x = first_step(x, denoised, sigma, sigma_next)
            continue
        if coefficients is not None:  # tensor arithmetic, so that a fit can differentiate through it
            x = x + sum((dt * c).to(d.dtype) * d for c, d in zip(coefficients[i, :len(ds)], ds))
            continue
        if fixed:
            weights = [dt * c for c in ADAMS_BASHFORTH[len(ds) - 1]]
        else:
            nodes = [(t - sigma) / dt for t in ts]
            weights = interp_weights(nodes, [dt / (k + 1) for k in range(len(ds))])
        x = combine(1.0, x, weights, ds)
    return x


def sample_ipndm(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                 callback: Callback | None = None, cond: Tensor | None = None, order: int = 4,
                 history: History | None = None,
                 coefficients: Tensor | Sequence[Sequence[float]] | None = None,
                 first_step: FirstStep | None = None) -> Tensor:
    """iPNDM (Zhang & Chen 2023): equal-step Adams-Bashforth in sigma, orders 1..4 while warming up; N NFE.

    With `coefficients` ([steps, order], newest first) the step weights are those instead (a learned solver);
    `history` starts the history full, `first_step` replaces the first (one-slope) step.
    """
    if coefficients is not None and not isinstance(coefficients, Tensor):
        coefficients = torch.tensor(coefficients, dtype=torch.float64)
    return _sigma_multistep(denoiser, x, sigmas, order, True, callback, cond, history, coefficients, first_step)


def sample_lms(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
               callback: Callback | None = None, cond: Tensor | None = None, order: int = 4,
               history: History | None = None, first_step: FirstStep | None = None) -> Tensor:
    """Linear multistep (variable-step Adams-Bashforth) in sigma with exact Lagrange weights; N NFE."""
    return _sigma_multistep(denoiser, x, sigmas, order, False, callback, cond, history, first_step=first_step)
