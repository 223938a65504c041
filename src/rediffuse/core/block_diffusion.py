"""Block diffusion of tokens (BD3-LM, Arriola et al. 2025, "Block Diffusion: Interpolating Between Autoregressive
and Diffusion Language Models", ICLR 2025): masked diffusion within blocks of L' tokens, each block conditioned
on every earlier block clean.

A sequence x of length L = n L' has blocks x^1, ..., x^n, and log p(x) = sum_b log p(x^b | x^<b). Each term is
bounded by the masked-diffusion NELBO (`core.masking`, MDLM) of block b given the clean prefix, with a time t_b
of its own:

    -log p(x) <= sum_b int_0^1 w(t_b) E_q [ sum_{l in b, z_l = m} -log x_theta(z^b_t, x^<b)_l[x^l] ] dt_b,

w(t) = -alpha'(t) / (1 - alpha(t)). L' = L is the masked model; L' = 1 with t = 1 (every token masked, w = 1 for
the log-linear schedule, whose alpha(1) = 0) is exactly the autoregressive negative log-likelihood, and for any t
the one-token integrand w(t) (1 - alpha(t)) integrates to 1, so the L' = 1 bound is tight.

Training in one pass (BD3-LM's vectorised form): the network reads the 2L tokens [z_t, x] (noisy copy, then clean
copy, both at positions 0..L-1) under `block_attention_mask`: a noisy token of block b sees the noisy tokens of b
and the clean tokens of blocks < b, a clean token of block b the clean tokens of blocks <= b; the logits of the
noisy copy give the loss. Sampling runs the same attention block by block with a key-value cache of the clean
blocks.

Clipped masking rates (BD3-LM, section 5): training draws each block's masking rate 1 - alpha(t) (= t for the
log-linear schedule) from U[beta, omega] instead of U[0, 1], and redraws a block's masks while the share it masks
falls outside [beta, omega]. This lowers the variance of the gradient estimate; the reported NELBO is always
estimated with U[0, 1] and no redraw. The paper chooses [beta, omega] per L' by the variance of the loss (their
LM1B / OpenWebText choices: U[0.45, 0.95] for L' = 4, U[0.3, 0.8] for L' = 16); `rediffuse.text` measures it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rediffuse.core.masking import MaskSchedule

f64 = torch.float64
REDRAWS = 64  # redraws of a block's masks to bring its masked share into [beta, omega]


def blocks_of(length: int, block: int) -> int:
    """The number of blocks of L' = block tokens in a sequence of `length` (ValueError unless block divides it)."""
    if block < 1 or length % block:
        raise ValueError(f"the block length {block} must be >= 1 and divide the sequence length {length}; "
                         "choose a divisor of --block-length")
    return length // block


def block_attention_mask(length: int, block: int, device: torch.device | str | None = None) -> Tensor:
    """[2L, 2L] boolean (True: may attend) of the noisy copy then the clean copy of L tokens in blocks of L'."""
    blocks_of(length, block)
    owner = torch.arange(length, device=device) // block
    same_or_later = owner[:, None] >= owner[None, :]
    noisy_to_noisy = owner[:, None] == owner[None, :]
    noisy_to_clean = owner[:, None] > owner[None, :]
    top = torch.cat([noisy_to_noisy, noisy_to_clean], 1)
    bottom = torch.cat([torch.zeros_like(same_or_later), same_or_later], 1)
    return torch.cat([top, bottom], 0)


def block_times(batch: int, blocks: int, generator: torch.Generator | None = None, low: float = 0.0,
                high: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """Times [batch, blocks] (float64) stratified over all batch * blocks draws, then mapped onto [low, high]."""
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"the clipped rates need 0 <= beta < omega <= 1, got [{low}, {high}]")
    n = batch * blocks
    u = torch.rand((), generator=generator, dtype=f64, device=device)
    t = ((u + torch.arange(n, dtype=f64, device=device) / n) % 1.0).reshape(batch, blocks)
    return low + (high - low) * t


def per_token(t: Tensor, block: int) -> Tensor:
    """Each block's value [B, n] repeated over its L' tokens: [B, n L']."""
    return t.repeat_interleave(block, dim=1)


def noise_blocks(x: Tensor, t: Tensor, block: int, schedule: MaskSchedule, mask_id: int,
                 generator: torch.Generator | None = None, low: float = 0.0, high: float = 1.0) -> Tensor:
    """z_t [B, L]: each token of block b masked with probability 1 - alpha(t[:, b]); with [low, high] narrower than
    [0, 1], a block whose masked share falls outside it is redrawn (at most REDRAWS times)."""
    n = blocks_of(x.shape[1], block)
    if t.shape != (x.shape[0], n):
        raise ValueError(f"expected one time per block, [{x.shape[0]}, {n}], got {tuple(t.shape)}")
    keep = per_token(schedule.alpha(t), block).to(x.device)
    u = torch.rand(x.shape, generator=generator, dtype=f64, device=x.device)
    if (low, high) != (0.0, 1.0):
        for _ in range(REDRAWS):
            share = (u >= keep).to(f64).reshape(len(x), n, block).mean(-1)
            bad = per_token((share < low - 1e-9) | (share > high + 1e-9), block)
            if not bool(bad.any()):
                break
            u = torch.where(bad, torch.rand(x.shape, generator=generator, dtype=f64, device=x.device), u)
    return torch.where(u < keep, x, torch.full_like(x, mask_id))


def block_nelbo(log_probs: Tensor, x: Tensor, z: Tensor, t: Tensor, schedule: MaskSchedule, mask_id: int,
                block: int) -> Tensor:
    """The per-sample block NELBO estimate sum_b w(t_b) sum_{l in b masked} -log p(x^l | z^b, x^<b) / L, nats per
    token [B], from the noisy copy's SUBS log-probabilities [B, L, K]."""
    if log_probs.shape[:-1] != x.shape or z.shape != x.shape:
        raise ValueError(f"expected log_probs [B, L, K] over x and z [B, L]; got {tuple(log_probs.shape)}, "
                         f"{tuple(x.shape)} and {tuple(z.shape)}")
    blocks_of(x.shape[1], block)
    masked = z == mask_id
    nll = -log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1).to(f64)
    weight = per_token(schedule.weight(t).to(device=x.device), block)
    weight = torch.where(masked, weight, torch.zeros_like(weight))  # masked implies t > 0: finite weights only
    return ((weight * nll).sum(-1) / x.shape[1]).to(log_probs.dtype)
