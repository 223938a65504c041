"""Block diffusion's truth on a Markov chain (`truth.markov`): the exact block denoiser and its closed-form NELBO.

The exact denoiser of block b given the clean prefix x^<b and the partly masked block z^b is the chain's
posterior of the sequence (x^<b, z^b, every later token masked) at block b's positions: later tokens marginalised.

Closed form, by enumeration: for block b and a mask set M inside it of size k, C_b(M) = sum_{l in M}
H(X_l | X^<b, X^b_{not M}), and g_{b,k} = sum_{|M| = k} C_b(M) / (k binom(L', k)). As in `truth.markov` (each
block is a masked model of length L' with its prefix as extra evidence), the block's expected masked loss at keep
probability alpha is sum_k binom(L', k) (1 - alpha)^k alpha^(L' - k) k g_{b,k}; the continuous-time NELBO is
sum_b sum_k g_{b,k} = sum_b H(X^b | X^<b) = H(X) for every L'; with T steps per block it is the sum over blocks of
the T-step bound, >= H(X).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from rediffuse.core.block_diffusion import blocks_of
from rediffuse.core.masking import LOG_LINEAR, MaskSchedule
from rediffuse.truth.markov import MarkovChain

f64 = torch.float64


def block_input(chain: MarkovChain, x: Tensor, z: Tensor, b: int, block: int) -> Tensor:
    """The sequence the exact denoiser reads for block b: x before it, z in it, masks after it."""
    seq = torch.full_like(x, chain.mask_id)
    seq[:, :b * block] = x[:, :b * block]
    seq[:, b * block:(b + 1) * block] = z[:, b * block:(b + 1) * block]
    return seq


def exact_block_log_probs(chain: MarkovChain, x: Tensor, z: Tensor, block: int) -> Tensor:
    """SUBS log-probs [B, L, V] of the noisy copy z given the clean x, each block seeing only the blocks before it."""
    out = torch.empty(*x.shape, chain.vocab, dtype=f64)
    for b in range(blocks_of(chain.length, block)):
        part = slice(b * block, (b + 1) * block)
        out[:, part] = chain.posterior(block_input(chain, x, z, b, block))[:, part]
    return out


def block_entropies(chain: MarkovChain, block: int) -> Tensor:
    """g_{b,k} [n, L'] by enumerating every sequence and every mask set inside each block (module docstring)."""
    xs = chain.all_sequences()
    px = chain.log_prob(xs).exp()
    n = blocks_of(chain.length, block)
    g = torch.zeros(n, block, dtype=f64)
    for b in range(n):
        for bits in itertools.product([False, True], repeat=block):
            if not any(bits):
                continue
            inside = torch.tensor(bits)
            z = xs.clone()
            z[:, b * block:(b + 1) * block] = torch.where(inside, chain.mask_id, xs[:, b * block:(b + 1) * block])
            seq = block_input(chain, xs, z, b, block)
            positions = b * block + torch.nonzero(inside).squeeze(1)
            nll = -chain.posterior(seq).gather(-1, xs.unsqueeze(-1)).squeeze(-1)[:, positions]
            g[b, int(inside.sum()) - 1] += float(px @ nll.sum(1))
    k = torch.arange(1, block + 1, dtype=f64)
    counts = torch.tensor([math.comb(block, int(j)) for j in k], dtype=f64)
    return g / (k * counts)


def block_nelbo(chain: MarkovChain, block: int, steps: int | None = None,
                schedule: MaskSchedule = LOG_LINEAR) -> float:
    """The exact block denoiser's NELBO in nats per sequence: continuous time (steps=None) or T steps per block."""
    g = block_entropies(chain, block)
    if steps is None:
        return float(g.sum())
    k = torch.arange(1, block + 1, dtype=f64)
    counts = torch.tensor([math.comb(block, int(j)) for j in k], dtype=f64)
    t = torch.arange(1, steps + 1, dtype=f64) / steps
    a_t, a_s = schedule.alpha(t)[:, None], schedule.alpha(t - 1 / steps)[:, None]
    loss = (counts * (1 - a_t) ** k * a_t ** (block - k) * k * g.sum(0)).sum(-1)  # [T], all blocks together
    return float(((a_s[:, 0] - a_t[:, 0]) / (1 - a_t[:, 0]) * loss).sum())
