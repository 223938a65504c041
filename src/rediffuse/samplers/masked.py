"""The ancestral sampler of masked (absorbing-state) diffusion, with float64 categorical draws.

From z (all masks, or a template whose given tokens are kept exactly) the reverse process runs T steps
t_k = k / T down to 0. From t to s < t each masked token is revealed with probability
(alpha_s - alpha_t) / (1 - alpha_t), its value drawn from the model's distribution x_theta(z_t) at that position
(Sahoo et al. 2024, MDLM; Shi et al. 2024, MD4); the last step (alpha_0 = 1) reveals every token
left. `model(z, t)` returns log-probabilities [B, L, K] (SUBS form, `rediffuse.core.masking.subs_log_probs`); the mask
column, if the model has one, is zeroed before drawing. A time-agnostic model (MDLM's caching) sees the
same input until some token changes, so its output is reused and it is called once per step that changed z
(plus the first), which for T >> L is far fewer than T calls.

order="confidence" reveals, per step and sample, the k masked positions whose most probable token is the most
probable (ties: leftmost first), k such that round(n0 (1 - alpha_s) / (1 - alpha_1)) tokens of the n0 initially
masked are still masked after the step; their values are still drawn from the model's distribution. The choice of
positions depends on z only, never on the draws, so with one token per step (T = L, log-linear) it samples the
exact joint of an exact model, like any adaptive autoregressive order.

Categorical draws are inverse-CDF in float64 (`categorical`): Zheng et al. 2024 ("Masked diffusion models are
secretly time-agnostic masked models and exploit inaccurate categorical sampling") show that float32 Gumbel-max
truncates the Gumbel noise, which lowers the effective temperature and so inflates sample-quality figures.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from rediffuse.core.masking import LOG_LINEAR, MaskSchedule

f64 = torch.float64
MaskedModel = Callable[[Tensor, Tensor], Tensor]
Generator = torch.Generator | Sequence[torch.Generator] | None
ORDERS = ("random", "confidence")


def uniforms(shape: tuple[int, ...], generator: Generator = None, device: torch.device | str = "cpu") -> Tensor:
    """U[0, 1) float64 draws of shape [B, ...]; a list of generators draws row i from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=f64, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=f64, device=device) for g in generator])


def categorical(probs: Tensor, generator: torch.Generator | None = None, *, uniform: Tensor | None = None) -> Tensor:
    """One draw per row of probs [..., K] (unnormalised, >= 0) by inverse CDF in float64.

    Category j is drawn iff cdf_{j-1} <= u * cdf_K < cdf_j for u ~ U[0, 1) in float64, so a category of
    probability p is drawn with probability p up to 2^-53, and one of probability 0 never. With 1-D probs, `uniform`
    may have any shape (many draws from one distribution).
    """
    probs = probs.to(f64)
    cdf = probs.cumsum(-1)
    if uniform is None:
        uniform = torch.rand(probs.shape[:-1], generator=generator, dtype=f64, device=probs.device)
    target = uniform.to(f64) * cdf[..., -1:].squeeze(-1)
    if probs.ndim == 1:
        index = torch.searchsorted(cdf, target, right=True)
    else:
        index = torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1)
    positive = probs > 0
    last = probs.shape[-1] - 1 - positive.flip(-1).to(torch.int8).argmax(-1)  # guards u * total >= total
    return torch.minimum(index, last)


def masked_template(batch: int, length: int, mask_id: int, prompt: Sequence[int] | Tensor = ()) -> Tensor:
    """z [batch, length]: the prompt tokens as a fixed prefix, mask_id everywhere after it."""
    prompt = torch.as_tensor(prompt, dtype=torch.long).reshape(-1)
    if prompt.numel() > length:
        raise ValueError(f"the prompt has {prompt.numel()} tokens but the length is {length}; "
                         f"give a length of at least {prompt.numel()}")
    z = torch.full((batch, length), mask_id, dtype=torch.long)
    z[:, :prompt.numel()] = prompt
    return z


def probabilities(log_probs: Tensor, mask_id: int) -> Tensor:
    """The model's per-position distributions in float64 with the mask token's probability set to 0."""
    probs = torch.softmax(log_probs.to(f64), dim=-1)
    if mask_id < probs.shape[-1]:
        probs[..., mask_id] = 0.0
    return probs


def confident_reveal(probs: Tensor, masked: Tensor, count: Tensor) -> Tensor:
    """The `count[b]` masked positions of each row whose top probability is highest (ties: leftmost), [B, L]."""
    confidence = torch.where(masked, probs.max(-1).values, torch.full_like(probs[..., 0], -1.0))
    order = torch.sort(confidence, dim=1, descending=True, stable=True).indices
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous()
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return masked & (rank < count.unsqueeze(1))


def sample_masked(model: MaskedModel, z: Tensor, steps: int, *, schedule: MaskSchedule = LOG_LINEAR,
                  mask_id: int, generator: Generator = None, callback: Callable[[dict[str, Any]], None] | None = None,
                  time_agnostic: bool | None = None, order: str = "random") -> Tensor:
    """Fill the mask_id positions of z [B, L] by T = steps ancestral steps of model(z, t) -> log-probs [B, L, K].

    time_agnostic=None reads `model.time_agnostic` (default True): then the model is called again only after a
    step that changed z. The callback gets {"i", "t", "s", "z", "log_probs", "revealed"} after each step.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1 (the number of reverse steps), got {steps}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if z.ndim != 2 or z.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"z must be integer tokens [B, L] (mask_id {mask_id} where to fill), got "
                         f"{z.dtype} {tuple(z.shape)}")
    if time_agnostic is None:
        time_agnostic = bool(getattr(model, "time_agnostic", True))
    z = z.clone()
    batch, length = z.shape
    times = [k / steps for k in range(steps, -1, -1)]
    initial = (z == mask_id).sum(1)
    top = 1 - float(schedule.alpha(times[0]))
    if bool((z < 0).any()):
        raise ValueError("tokens in z must be >= 0 (mask_id where to fill)")
    log_probs, probs, stale = torch.empty(0), torch.empty(0), True
    for i, (t, s) in enumerate(zip(times, times[1:])):
        masked = z == mask_id
        if not bool(masked.any()):
            break
        if stale or not time_agnostic:
            log_probs, stale = model(z, torch.full((batch,), t, dtype=f64, device=z.device)), False
            if log_probs.shape[:2] != z.shape or log_probs.shape[-1] <= int(torch.where(masked, 0, z).max()):
                raise ValueError(f"the model returned {tuple(log_probs.shape)} for tokens {tuple(z.shape)}; "
                                 f"it must return log-probs [B, L, K] over every token id in z")
            probs = probabilities(log_probs, mask_id)
        if order == "random":
            reveal = masked & (uniforms((batch, length), generator, z.device) < schedule.reveal_probability(t, s))
        else:
            still = torch.round(initial.to(f64) * (1 - float(schedule.alpha(s))) / top).long()
            reveal = confident_reveal(probs, masked, masked.sum(1) - still)
        u = uniforms((batch, length), generator, z.device)
        if bool(reveal.any()):
            z = z.clone()  # a new tensor per change: what the callback was given stays a snapshot
            z[reveal] = categorical(probs[reveal], uniform=u[reveal]).to(z.dtype)
            stale = True
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "z": z, "log_probs": log_probs, "revealed": reveal})
    return z
