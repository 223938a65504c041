"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and a free corrector (UniC), in data prediction.

In the notation of `dpm_solver`, UniP-p updates x_next = e^-h x + psi_1 D_i + B(h) sum_k rho_k (D_k - D_i) / r_k
over the p-1 earlier D's (r_k = u_k), with rho solving sum_k rho_k r_k^(m-1) = m! psi_(m+1)(h) / (h^m B(h)),
m = 1..p-1. UniC-p adds the model output at the new point (r = 1) to the same system and recomputes the step
from x_i: order p+1, and the new output is reused by the next predictor, so no extra NFE.
Whenever the system is square, B(h) cancels and rho gives the exact exponential Adams weights
(`exp_adams_weights`). B(h) (bh1: h; bh2: e^h - 1 in the paper's noise-prediction form, which is
1 - e^-h = psi_1(h) in data prediction) matters only where the reference implementation fixes rho = 1/2
instead of solving: the order-2 predictor and the order-1 corrector.
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

from .common import Callback, Denoiser, Generator, History, log_sigma_history, observed, steps
from .dpm_solver import exp_adams_weights, psi, two_point_weights
from .multistep import combine, push


def unipc_weights(nodes: Sequence[float], h: float, variant: str) -> list[float]:
    """Weights on (D at each node) for UniP (nodes 0, u_1, ...) or UniC (nodes 0, u_1, ..., 1)."""
    if len(nodes) != 2:
        return exp_adams_weights(nodes, h)
    p1 = psi(h, 1)[0]
    return two_point_weights(nodes[1], p1, h if variant == "bh1" else p1)


def sample_unipc(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                 callback: Callback | None = None, cond: Tensor | None = None, variant: str = "bh2", order: int = 2,
                 corrector: bool = True, history: History | None = None) -> Tensor:
    """UniPC with predictor order `order` (1..3); the corrector runs after every step but the last; N NFE.

    With a `history` hook the predictor's history starts full (`warm_history`).
    """
    if not 1 <= order <= 3:
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    lams, ds = log_sigma_history(history, x, sigmas, order)
    last = None  # (x_i, e^-h, h, nodes) of the step just taken, for the corrector
    for i, sigma, sigma_next in steps(sigmas, skip_repeats=True):  # no repeated history nodes
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        if last is not None and sigma_next > 0:
            x_prev, decay, h_prev, nodes = last
            x = combine(decay, x_prev, unipc_weights([*nodes, 1.0], h_prev, variant), [*ds, denoised])
        push(lams, -math.log(sigma), order)
        push(ds, denoised, order)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        nodes = [(lam - lams[0]) / h for lam in lams]
        if corrector:
            last = (x, sigma_next / sigma, h, nodes)
        x = combine(sigma_next / sigma, x, unipc_weights(nodes, h, variant), ds)
    return x


def sample_unipc_bh1(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                     callback: Callback | None = None, cond: Tensor | None = None, order: int = 2,
                     corrector: bool = True, history: History | None = None) -> Tensor:
    """UniPC with B(h) = h (bh1, suited to very few steps); N NFE."""
    return sample_unipc(denoiser, x, sigmas, callback=callback, cond=cond, variant="bh1", order=order,
                        corrector=corrector, history=history)


def sample_unipc_bh2(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                     callback: Callback | None = None, cond: Tensor | None = None, order: int = 2,
                     corrector: bool = True, history: History | None = None) -> Tensor:
    """UniPC with B(h) = 1 - e^-h (bh2; with corrector=False and order 2 it is DPM-Solver++(2M)); N NFE."""
    return sample_unipc(denoiser, x, sigmas, callback=callback, cond=cond, variant="bh2", order=order,
                        corrector=corrector, history=history)
