"""DPM-Solver++ (Lu et al. 2022): exponential integrators of the probability-flow ODE in data prediction.

With lambda = -log(sigma) and h = lambda_next - lambda, the ODE dx/dsigma = (x - D) / sigma solves exactly as
x_next = e^-h x + integral_0^h e^-(h-v) D(lambda + v) dv. Replacing D by its Taylor expansion in lambda gives
x_next = e^-h x + sum_k psi_k(h) D^(k-1), psi_k(h) = integral_0^h e^-(h-v) v^(k-1)/(k-1)! dv,
psi_1 = 1 - e^-h, psi_(k+1) = h^k/k! - psi_k. Multistep methods estimate the derivatives from earlier
D's (nodes u_j = (lambda_j - lambda) / h <= 0), singlestep ones from intermediate points. The step to sigma = 0
(h = inf, e^-h = 0, psi_1 = 1) is always first order: it returns D.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import Tensor

from .common import Callback, Denoiser, Generator, History, call, log_sigma_history, noise_like, observed, steps
from .multistep import combine, interp_weights, push

Weights = Callable[[Sequence[float], float], list[float]]


def psi(h: float, k: int) -> list[float]:
    """[psi_1(h), ..., psi_k(h)]: the exponential-integrator weights of D, h D', h^2 D''/2 ... (see module)."""
    out = [-math.expm1(-h)]
    for j in range(1, k):
        out.append(h**j / math.factorial(j) - out[-1])
    return out


def exp_adams_weights(nodes: Sequence[float], h: float) -> list[float]:
    """Exact exponential weights for the polynomial through D at lambda + u_j h (exponential Adams).

    The moments are integral_0^h e^-(h-v) (v/h)^k dv = k! psi_(k+1)(h) / h^k. With nodes (0, -r0, -r0-r1)
    this is third-order DPM-Solver++(3M); with a node at u = 1 it is the UniC corrector of order >= 2.
    """
    p = psi(h, len(nodes))
    return interp_weights(nodes, [math.factorial(k) * p[k] / h**k for k in range(len(nodes))])


def two_point_weights(u: float, p1: float, b: float) -> list[float]:
    """Weights of p1 D_0 + (b / 2) (D_u - D_0) / u: the 'midpoint' second-order update.

    With b = p1 = psi_1(h) it is DPM-Solver++(2M) (u = -h_last/h) and (2S) (u = r); with b = h, UniPC-bh1.
    """
    return [p1 - b / (2 * u), b / (2 * u)]


def midpoint_weights(nodes: Sequence[float], h: float) -> list[float]:
    """First order for one node, DPM-Solver++(2M)'s midpoint update for two."""
    p1 = psi(h, 1)[0]
    return [p1] if len(nodes) == 1 else two_point_weights(nodes[1], p1, p1)


def exp_multistep(denoiser: Denoiser, x: Tensor, sigmas: Tensor, order: int, weights: Weights, *,
                  eta: float = 0.0, s_noise: float = 1.0, generator: Generator = None,
                  callback: Callback | None = None, cond: Tensor | None = None,
                  history: History | None = None) -> Tensor:
    """The multistep loop: x_next = e^-((1+eta) h) x + sum_j w_j D_j (+ noise when eta > 0); N NFE.

    `weights(nodes, h_eff)` gives w_j for the newest-first history nodes. With eta > 0 it is the SDE variant
    of DPM-Solver++ (as k-diffusion's sample_dpmpp_2m_sde and diffusers' sde-dpmsolver++): the linear part
    decays at rate 1 + eta and fresh noise of std sigma_next sqrt(1 - e^(-2 eta h)) makes up the variance.
    With a `history` hook the history starts full (`warm_history`).
    """
    lams, ds = log_sigma_history(history, x, sigmas, order)
    for i, sigma, sigma_next in steps(sigmas, skip_repeats=True):  # no repeated history nodes
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        push(lams, -math.log(sigma), order)
        push(ds, denoised, order)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        nodes = [(lam - lams[0]) / h for lam in lams]
        x = combine(math.exp(-(1 + eta) * h), x, weights(nodes, (1 + eta) * h), ds)
        if eta > 0:
            x.add_(noise_like(x, generator), alpha=sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise)
    return x


def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                    callback: Callback | None = None, cond: Tensor | None = None,
                    history: History | None = None) -> Tensor:
    """DPM-Solver++(2M): x_next = e^-h x + psi_1 ((1 + 1/2r) D_i - (1/2r) D_(i-1)), r = h_(i-1)/h; N NFE."""
    return exp_multistep(denoiser, x, sigmas, 2, midpoint_weights, callback=callback, cond=cond, history=history)


def sample_dpmpp_2m_sde(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                        callback: Callback | None = None, cond: Tensor | None = None, eta: float = 1.0,
                        s_noise: float = 1.0, history: History | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE, midpoint type: the 2M update with h -> (1+eta) h plus fresh noise; N NFE."""
    return exp_multistep(denoiser, x, sigmas, 2, midpoint_weights, eta=eta, s_noise=s_noise,
                         generator=generator, callback=callback, cond=cond, history=history)


def sample_dpmpp_3m(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                    callback: Callback | None = None, cond: Tensor | None = None,
                    history: History | None = None) -> Tensor:
    """DPM-Solver++(3M): the exact exponential integral of the quadratic through the last three D's; N NFE.

    In Newton form this is x_next = e^-h x + psi_1 D_i + (psi_2/h) D1 + (2 psi_3/h^2) D2 with D1, D2 the
    divided differences of the paper. The widely copied form with psi_3/h^2 (k-diffusion, diffusers) weighs
    the second difference by half of its Taylor value and converges only at second order.
    """
    return exp_multistep(denoiser, x, sigmas, 3, exp_adams_weights, callback=callback, cond=cond, history=history)


def sample_dpmpp_2s(denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, generator: Generator = None,
                    callback: Callback | None = None, cond: Tensor | None = None, r: float = 0.5) -> Tensor:
    """DPM-Solver++(2S): a first-order step to lambda + r h, then the midpoint update; 2N NFE (2N-1 to 0)."""
    for i, sigma, sigma_next in steps(sigmas):
        denoised = observed(denoiser, x, i, sigma, sigma_next, cond, callback)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        sigma_mid = sigma * math.exp(-r * h)
        x_mid = combine(sigma_mid / sigma, x, psi(r * h, 1), [denoised])
        denoised_mid = call(denoiser, x_mid, sigma_mid, cond)
        p1 = psi(h, 1)[0]
        x = combine(sigma_next / sigma, x, two_point_weights(r, p1, p1), [denoised, denoised_mid])
    return x
