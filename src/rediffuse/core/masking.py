"""Masked (absorbing-state) discrete diffusion: the forward process, its schedules, SUBS and the NELBO.

Tokens are integers in [0, K); `mask_id` is the absorbing state m (usually K-1 of a vocabulary that includes it,
or V for a model that outputs only the V real tokens). The forward process masks each position independently
(Austin et al. 2021, D3PM absorbing; Sahoo et al. 2024, MDLM; Shi et al. 2024, MD4):

    q(z_t | x) = prod_l Cat(z_t^l; alpha_t onehot(x^l) + (1 - alpha_t) onehot(m)),  alpha_0 = 1, alpha_1 = 0,

so z_t^l = x^l with probability alpha_t and m otherwise. Schedules (`MaskSchedule`):
  - "log-linear" (MDLM's default): alpha_t = 1 - (1 - eps) t, alpha'_t = -(1 - eps), and the NELBO weight
    w(t) = -alpha'_t / (1 - alpha_t) = 1/t for every eps. eps = 0 (the default here) gives alpha_1 = 0 exactly;
    MDLM trains with eps = 1e-3, which leaves out the part alpha in [0, eps) of the bound (a relative O(eps)).
  - "cosine" (MD4's cosine schedule, Shi et al. 2024): alpha_t = 1 - cos(pi/2 (1 - t)),
    alpha'_t = -(pi/2) sin(pi/2 (1 - t)), w(t) = (pi/2) tan(pi/2 (1 - t)) (-> 1/t as t -> 0, -> 0 at t = 1).

SUBS (MDLM's substitution parameterisation): the network's distribution x_theta(z_t) gives the mask token
probability 0, and unmasked positions are copied (a one-hot at z_t^l), so only masked positions carry loss.

The continuous-time NELBO of MDLM and MD4, with SUBS, is

    -log p(x) <= int_0^1 w(t) E_{q(z_t | x)} [ sum_{l : z_t^l = m} -log x_theta(z_t)_l[x^l] ] dt.

It is the T -> infinity limit of the discrete bound sum_i E_q KL(q(z_s | z_t, x) || p_theta(z_s | z_t)): for a
masked position q reveals x^l with probability (alpha_s - alpha_t) / (1 - alpha_t) and p_theta reveals v with
that probability times x_theta[v], so each KL is (alpha_s - alpha_t) / (1 - alpha_t) * (-log x_theta[x^l]), and
(alpha_s - alpha_t) / (t - s) -> -alpha'_t. Substituting alpha for t shows that the bound does not depend on the
schedule (MD4; Kingma et al. 2021 for Gaussians), only the estimator's variance does.

`masked_nelbo` is its one-sample Monte Carlo estimate: t ~ U[0, 1) (stratified across the batch, as in MDLM's
code and Kingma et al. 2021's low-discrepancy sampler), z_t ~ q(z_t | x), the integrand divided by the length L:
nats per token; bits per token (bits/char for character tokens) are nats / ln 2. It is unbiased, but with
w ~ 1/t and one masked token at chance ~t its variance diverges logarithmically as t -> 0 (for both schedules
here), so standard errors from a few thousand draws are rough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

f64 = torch.float64
KINDS = ("log-linear", "cosine")


@dataclass(frozen=True)
class MaskSchedule:
    """The keep probability alpha(t) of the masking process, its derivative and the NELBO weight."""

    kind: str = "log-linear"
    eps: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown mask schedule {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not 0.0 <= self.eps < 1.0 or (self.kind == "cosine" and self.eps != 0.0):
            raise ValueError("eps must be in [0, 1), and 0 for the cosine schedule")

    def alpha(self, t: float | Tensor) -> Tensor:
        """alpha(t): the probability that a token is still unmasked at time t (float64)."""
        t = torch.as_tensor(t, dtype=f64)
        if self.kind == "log-linear":
            return 1 - (1 - self.eps) * t
        return 1 - torch.cos(math.pi / 2 * (1 - t))

    def alpha_prime(self, t: float | Tensor) -> Tensor:
        """d alpha / dt (float64)."""
        t = torch.as_tensor(t, dtype=f64)
        if self.kind == "log-linear":
            return torch.full_like(t, -(1 - self.eps))
        return -math.pi / 2 * torch.sin(math.pi / 2 * (1 - t))

    def weight(self, t: float | Tensor) -> Tensor:
        """The NELBO weight w(t) = -alpha'(t) / (1 - alpha(t)) (float64; infinite at t = 0)."""
        t = torch.as_tensor(t, dtype=f64)
        if self.kind == "log-linear":
            return 1 / t
        return math.pi / 2 * torch.tan(math.pi / 2 * (1 - t))

    def reveal_probability(self, t: float, s: float) -> float:
        """The chance (alpha_s - alpha_t) / (1 - alpha_t) that a token masked at t is unmasked at s < t."""
        a_t, a_s = float(self.alpha(t)), float(self.alpha(s))
        return 1.0 if s <= 0 else (a_s - a_t) / (1 - a_t)


LOG_LINEAR = MaskSchedule("log-linear")
COSINE = MaskSchedule("cosine")


def stratified_times(batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """Low-discrepancy times t_i = (u + i / B) mod 1 from one uniform u: one point in each 1/B bin (float64)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    u = torch.rand((), generator=generator, dtype=f64, device=device)
    return (u + torch.arange(batch, dtype=f64, device=device) / batch) % 1.0


def mask(x: Tensor, t: float | Tensor, schedule: MaskSchedule, mask_id: int,
         generator: torch.Generator | None = None) -> Tensor:
    """z_t ~ q(z_t | x): each token of x [B, L] replaced by mask_id with probability 1 - alpha(t), t scalar or [B]."""
    keep = schedule.alpha(t).to(x.device)
    keep = keep.reshape(-1, *([1] * (x.ndim - 1))) if keep.ndim else keep
    u = torch.rand(x.shape, generator=generator, dtype=f64, device=x.device)
    return torch.where(u < keep, x, torch.full_like(x, mask_id))


def subs_log_probs(logits: Tensor, z: Tensor, mask_id: int) -> Tensor:
    """SUBS log-probabilities [B, L, K] from logits: the mask token gets -inf, unmasked positions a one-hot at z."""
    k = logits.shape[-1]
    if mask_id < k:
        column = torch.arange(k, device=logits.device) == mask_id
        logits = logits.masked_fill(column, -math.inf)
    log_probs = torch.log_softmax(logits, dim=-1)
    masked = z == mask_id
    if bool((z[~masked] >= k).any()) or bool((z < 0).any()):
        raise ValueError(f"tokens must be in [0, {k}) or the mask id {mask_id}")
    index = torch.where(masked, torch.zeros_like(z), z).unsqueeze(-1)
    copied = torch.full_like(log_probs, -math.inf).scatter(-1, index, 0.0)
    return torch.where(masked.unsqueeze(-1), log_probs, copied)


def masked_nelbo(log_probs: Tensor, x: Tensor, z: Tensor, t: float | Tensor, schedule: MaskSchedule,
                 mask_id: int) -> Tensor:
    """The per-sample NELBO estimate w(t) sum_{l masked} -log p(x^l | z) / L in nats per token, shape [B]."""
    if log_probs.shape[:-1] != x.shape or z.shape != x.shape:
        raise ValueError(f"expected log_probs [B, L, K] over x and z [B, L]; got {tuple(log_probs.shape)}, "
                         f"{tuple(x.shape)} and {tuple(z.shape)}")
    masked = z == mask_id
    nll = -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    total = torch.where(masked, nll, torch.zeros_like(nll)).sum(-1)
    weight = schedule.weight(t).to(device=total.device, dtype=total.dtype)
    weight = torch.where(masked.any(-1), weight, torch.zeros_like(total))  # nothing masked (t = 0): no loss
    return weight * total / x.shape[-1]


def bits_per_token(nats: float | Tensor) -> float | Tensor:
    """Nats per token as bits per token (bits/char for character tokens): nats / ln 2."""
    return nats / math.log(2)
