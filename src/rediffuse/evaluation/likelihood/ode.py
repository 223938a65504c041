"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", appendix D.2), with the Hutchinson-Skilling trace estimator of FFJORD (Grathwohl et al. 2019).

In VE form the probability-flow ODE is dx/dsigma = (x - D(x, sigma)) / sigma. In log-sigma time u = ln sigma
it reads dx/du = g(x, u) = x - D(x, e^u), and the instantaneous change of variables gives
d/du log p_u(x(u)) = -div g(x(u), u). Integrating from sigma_min up to sigma_max:

    log p_{sigma_min}(x) = log N(x(sigma_max); 0, prior_std^2 I) + int_{ln sigma_min}^{ln sigma_max} div g du,

with div g = d - tr(dD/dx): an exact density for the model whose prior at sigma_max is the Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torchdiffeq import odeint

from rediffuse.samplers.common import Denoiser, call
from rediffuse.core.schedules import Schedule

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass(frozen=True)
class ODELikelihood:
    """The terms of the ODE log-likelihood, per sample (nats), and the solver's cost."""

    log_prob: Tensor  # log p_{sigma_min}(x) = prior_log_prob + delta_log_prob
    prior_log_prob: Tensor  # log N(x(sigma_max); 0, prior_std^2 I)
    delta_log_prob: Tensor  # the integral of the divergence from sigma_min to sigma_max
    x_end: Tensor  # the state at sigma_max
    nfe: int  # denoiser evaluations (each with its divergence)


def exact_divergence(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """(fn(x), tr d fn / dx) per sample, exact: the basis vectors go through batched backward passes."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        batch, dim = out.shape[0], out[0].numel()
        div = torch.zeros(batch, dtype=out.dtype, device=out.device)
        for start in range(0, dim, chunk):
            rows = torch.arange(start, min(start + chunk, dim), device=out.device)
            basis = torch.zeros(len(rows), batch, dim, dtype=out.dtype, device=out.device)
            basis[torch.arange(len(rows)), :, rows] = 1
            (grads,) = torch.autograd.grad(out, x, basis.reshape(len(rows), *out.shape), retain_graph=True,
                                           is_grads_batched=True)
            div = div + grads.reshape(len(rows), batch, dim)[torch.arange(len(rows)), :, rows].sum(0)
    return out.detach(), div


def hutchinson_divergence(fn: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    """(fn(x), mean over probes v of v^T (d fn / dx) v): the Hutchinson-Skilling trace estimate per sample."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        div = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
        for i, v in enumerate(probes):
            (vjp,) = torch.autograd.grad((out * v).sum(), x, retain_graph=i + 1 < len(probes))
            div = div + (vjp * v).reshape(x.shape[0], -1).sum(1)
    return out.detach(), div.detach() / len(probes)


def draw_probes(x: Tensor, num_probes: int, probe: str, generator: torch.Generator | None) -> Tensor:
    """num_probes probe vectors shaped like x with E[v v^T] = I: Rademacher signs or standard normals."""
    shape = (num_probes, *x.shape)
    if probe == "rademacher":
        signs = torch.randint(0, 2, shape, generator=generator, device=x.device)
        return (2 * signs - 1).to(x.dtype)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    raise ValueError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")


def gaussian_log_prob(x: Tensor, std: float) -> Tensor:
    """log N(x; 0, std^2 I) per sample."""
    flat = x.reshape(x.shape[0], -1)
    return -0.5 * (flat.shape[1] * math.log(2 * math.pi * std**2) + flat.pow(2).sum(1) / std**2)


def resolve_prior_std(sigma_max: float, prior_std: float | None, schedule: Schedule | None) -> float:
    """The prior's std: given, else the schedule's prior_std(sigma_max), else sigma_max."""
    if prior_std is not None:
        return float(prior_std)
    return schedule.prior_std(sigma_max) if schedule is not None else float(sigma_max)


def ode_likelihood(denoiser: Denoiser, x: Tensor, sigma_min: float, sigma_max: float, *,
                   prior_std: float | None = None, schedule: Schedule | None = None,
                   divergence: str = "exact", probe: str = "rademacher", num_probes: int = 1,
                   rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
                   generator: torch.Generator | None = None, cond: Tensor | None = None) -> ODELikelihood:
    """The terms of log p_{sigma_min}(x), the density of the data convolved with N(0, sigma_min^2 I).

    divergence='exact' costs d vector-Jacobian products per NFE (batched; for low dimensions); 'hutchinson'
    costs num_probes, with the probes fixed along each trajectory, so the result is unbiased per sample.
    The prior is N(0, prior_std^2 I) (default: `schedule.prior_std(sigma_max)`, else sigma_max).
    The solver is torchdiffeq's `odeint` in log-sigma time at the given tolerances, in x's dtype.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    probes = draw_probes(x, num_probes, probe, generator) if divergence == "hutchinson" else None
    nfe = 0

    def field(u: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal nfe
        nfe += 1
        sigma = u.exp()

        def g(y: Tensor) -> Tensor:
            return y - call(denoiser, y, sigma, cond)

        if probes is None:
            dx, div = exact_divergence(g, state[0])
        else:
            dx, div = hutchinson_divergence(g, state[0], probes)
        return dx, div.to(state[1].dtype)

    times = torch.tensor([math.log(sigma_min), math.log(sigma_max)], dtype=x.dtype, device=x.device)
    start = (x.detach(), x.new_zeros(x.shape[0]))
    with torch.no_grad():
        xs, deltas = odeint(field, start, times, rtol=rtol, atol=atol, method=method)
    x_end, delta = xs[-1], deltas[-1]
    prior = gaussian_log_prob(x_end, resolve_prior_std(sigma_max, prior_std, schedule))
    return ODELikelihood(prior + delta, prior, delta, x_end, nfe)


def log_likelihood(denoiser: Denoiser, x: Tensor, sigma_min: float, sigma_max: float, **options) -> Tensor:
    """log p_{sigma_min}(x) in nats per sample [B] (options and the NFE: see `ode_likelihood`)."""
    return ode_likelihood(denoiser, x, sigma_min, sigma_max, **options).log_prob
