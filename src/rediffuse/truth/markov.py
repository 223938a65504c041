"""A first-order Markov chain over V symbols and length L with an exact masked denoiser: the masked tests' truth.

p(x) = pi_0(x_1) prod_{l >= 2} P(x_{l-1}, x_l). Tokens are 0..V-1 and the mask id is V. For a partially masked z
the exact denoiser gives p(x_l | z) = p(x_l | the unmasked tokens of z) at every masked position by
forward-backward (unmasked positions enter as one-hot evidence), and a one-hot at z elsewhere: SUBS form, so
`chain(z, t)` can stand in for a network in `rediffuse.core.masking.masked_nelbo` and the masked sampler.

Closed-form NELBO of the exact denoiser (all quantities here are nats per sequence). Each position is masked
independently with probability 1 - alpha, so for a mask set M of size k, P(M) = (1 - alpha)^k alpha^(L - k). Let
C(M) = sum_{l in M} H(X_l | X_{not M}) and g_k = sum_{|M| = k} C(M) / (k binom(L, k)) (`masked_entropies`). Then

    E_{x, z_t} [ sum_{l masked} -log p(x_l | z_t) ] = sum_k binom(L, k) (1 - alpha_t)^k alpha_t^(L - k) k g_k.

Continuous time: with alpha as the variable (w dt = dalpha / (1 - alpha)) and the Beta integral
int_0^1 (1 - a)^(k - 1) a^(L - k) da = (k - 1)! (L - k)! / L!, the NELBO is sum_k g_k, for every schedule with
alpha_0 = 1 and alpha_1 = 0. That is the any-order autoregressive loss (Hoogeboom et al. 2022; Ou et al. 2024,
RADD): g_k = E over orders of -log p(x_sigma(L-k+1) | x_sigma(<=L-k)), so by the chain rule sum_k g_k = H(X)
exactly, for any source. The bound is tight in continuous time with the exact denoiser.

Discrete time, T steps t_i = i / T (the discrete-time bound of MDLM and MD4): the KL of one step at a masked position is
(alpha_s - alpha_t) / (1 - alpha_t) (-log p(x_l | z_t)), so

    NELBO_T = sum_i (alpha_{s_i} - alpha_{t_i}) / (1 - alpha_{t_i}) sum_k binom(L, k) (1 - a)^k a^(L - k) k g_k

with a = alpha_{t_i}. It is >= H(X), with equality for a factorised source (g_k = H / L for every k): several
tokens revealed in one step are drawn independently, which loses only when the source couples them.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from rediffuse.core.masking import LOG_LINEAR, MaskSchedule

f64 = torch.float64


class MarkovChain:
    """A homogeneous first-order Markov chain (initial distribution [V], transition rows [V, V]) of length L."""

    def __init__(self, transition: Tensor, length: int, initial: Tensor | None = None):
        transition = torch.as_tensor(transition, dtype=f64)
        if transition.ndim != 2 or transition.shape[0] != transition.shape[1] or length < 1:
            raise ValueError("expected a square transition matrix [V, V] and a length >= 1")
        if (transition <= 0).any():
            raise ValueError("transition probabilities must be positive (every sequence possible)")
        self.transition = transition / transition.sum(1, keepdim=True)
        self.initial = self.stationary() if initial is None else torch.as_tensor(initial, dtype=f64)
        if self.initial.shape != (self.vocab,) or (self.initial <= 0).any():
            raise ValueError(f"the initial distribution must be [{self.vocab}] and positive")
        self.initial = self.initial / self.initial.sum()
        self.length = length
        self.time_agnostic = True
        self._entropies: Tensor | None = None

    @classmethod
    def factorised(cls, probs: Tensor, length: int) -> MarkovChain:
        """Independent tokens with distribution probs: every transition row equal to probs."""
        probs = torch.as_tensor(probs, dtype=f64)
        return cls(probs.expand(probs.shape[0], -1), length, initial=probs)

    @classmethod
    def random(cls, vocab: int, length: int, seed: int = 0, sharpness: float = 2.0) -> MarkovChain:
        """A chain with transition rows softmax(sharpness * N(0, I)) and its stationary start (seeded)."""
        g = torch.Generator().manual_seed(seed)
        return cls(torch.softmax(sharpness * torch.randn(vocab, vocab, generator=g, dtype=f64), 1), length)

    @property
    def vocab(self) -> int:
        """V, the number of symbols."""
        return self.transition.shape[0]

    @property
    def mask_id(self) -> int:
        """The mask token's id, V."""
        return self.vocab

    def stationary(self) -> Tensor:
        """The stationary distribution pi = pi P (the left eigenvector of eigenvalue 1)."""
        evals, evecs = torch.linalg.eig(self.transition.T)
        pi = evecs[:, torch.argmin((evals - 1).abs())].real
        return pi / pi.sum()

    def marginals(self) -> Tensor:
        """p(x_l = v) for each position, [L, V]."""
        rows = [self.initial]
        for _ in range(self.length - 1):
            rows.append(rows[-1] @ self.transition)
        return torch.stack(rows)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n sequences [n, L] (int64)."""
        x = torch.empty(n, self.length, dtype=torch.long)
        x[:, 0] = torch.multinomial(self.initial.expand(n, -1), 1, generator=generator).squeeze(1)
        for pos in range(1, self.length):
            x[:, pos] = torch.multinomial(self.transition[x[:, pos - 1]], 1, generator=generator).squeeze(1)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) per sequence [n] (float64)."""
        x = x.long().cpu()
        logp = self.initial.log()[x[:, 0]]
        return logp + self.transition.log()[x[:, :-1], x[:, 1:]].sum(1)

    def entropy(self) -> float:
        """The exact entropy H(X) in nats per sequence: H(pi_0) + sum_l E[H(P(x_{l-1}, .))]."""
        row_entropy = -(self.transition * self.transition.log()).sum(1)
        h = -(self.initial * self.initial.log()).sum()
        return float(h + (self.marginals()[:-1] @ row_entropy).sum())

    def all_sequences(self) -> Tensor:
        """Every sequence, [V^L, L], in lexicographic order (index = the base-V number of the sequence)."""
        return torch.tensor(list(itertools.product(range(self.vocab), repeat=self.length)), dtype=torch.long)

    def posterior(self, z: Tensor) -> Tensor:
        """Exact SUBS log-probs [B, L, V]: p(x_l | unmasked z) where z_l = V (the mask), a one-hot at z elsewhere."""
        device, z = z.device, z.long().cpu()
        if z.ndim != 2 or z.shape[1] != self.length or (z < 0).any() or (z > self.vocab).any():
            raise ValueError(f"expected tokens [B, {self.length}] in 0..{self.vocab} ({self.vocab} = the mask)")
        onehot = torch.zeros(*z.shape, self.vocab + 1, dtype=f64).scatter(-1, z.unsqueeze(-1), 1.0)[..., :-1]
        evidence = torch.where((z == self.vocab).unsqueeze(-1), torch.ones_like(onehot), onehot)
        fwd, bwd = [_normed(self.initial * evidence[:, 0])], [torch.ones_like(evidence[:, 0])]
        for pos in range(1, self.length):
            fwd.append(_normed((fwd[-1] @ self.transition) * evidence[:, pos]))
        for pos in range(self.length - 2, -1, -1):
            bwd.append(_normed((evidence[:, pos + 1] * bwd[-1]) @ self.transition.T))
        post = torch.stack(fwd, 1) * torch.stack(bwd[::-1], 1)
        return _normed(post).log().to(device)

    def __call__(self, z: Tensor, t: float | Tensor | None = None) -> Tensor:
        """The exact denoiser as a model (time-agnostic: t is ignored)."""
        return self.posterior(z)

    def masked_entropies(self) -> Tensor:
        """g_k for k = 1..L: the mean over mask sets of size k and their positions of H(X_l | X_unmasked), [L]."""
        if self._entropies is not None:
            return self._entropies
        xs = self.all_sequences()
        px = self.log_prob(xs).exp()
        totals = torch.zeros(self.length + 1, dtype=f64)
        for bits in itertools.product([False, True], repeat=self.length):
            masked = torch.tensor(bits)
            if not masked.any():
                continue
            z = torch.where(masked, self.vocab, xs)
            nll = -self.posterior(z).gather(-1, xs.unsqueeze(-1)).squeeze(-1)
            totals[int(masked.sum())] += (px @ nll[:, masked]).sum()
        k = torch.arange(1, self.length + 1, dtype=f64)
        counts = torch.tensor([math.comb(self.length, int(j)) for j in k], dtype=f64)
        self._entropies = totals[1:] / (k * counts)
        return self._entropies

    def masked_loss(self, alpha: float | Tensor, g: Tensor | None = None) -> Tensor:
        """E_{x, z} [sum_{l masked} -log p(x_l | z)] when each token is masked with probability 1 - alpha."""
        g = self.masked_entropies() if g is None else g
        alpha = torch.as_tensor(alpha, dtype=f64).unsqueeze(-1)
        k = torch.arange(1, self.length + 1, dtype=f64)
        counts = torch.tensor([math.comb(self.length, int(j)) for j in k], dtype=f64)
        return (counts * (1 - alpha) ** k * alpha ** (self.length - k) * k * g).sum(-1)

    def nelbo(self, steps: int | None = None, schedule: MaskSchedule = LOG_LINEAR) -> float:
        """The exact denoiser's NELBO in nats per sequence: continuous time (steps=None, = H) or T steps."""
        g = self.masked_entropies()
        if steps is None:
            return float(g.sum())
        if steps < 1 or float(schedule.alpha(1.0)) > 1e-12:
            raise ValueError("the discrete bound needs steps >= 1 and a schedule with alpha(1) = 0 (eps=0)")
        t = torch.arange(1, steps + 1, dtype=f64) / steps
        a_t, a_s = schedule.alpha(t), schedule.alpha(t - 1 / steps)
        return float(((a_s - a_t) / (1 - a_t) * self.masked_loss(a_t, g)).sum())

    def sampler_law(self, steps: int, schedule: MaskSchedule = LOG_LINEAR) -> Tensor:
        """The exact law [V^L] of the T-step random-order ancestral sampler driven by this chain's exact denoiser.

        Each token is revealed at step i with probability q_i = alpha_{s_i} - alpha_{t_i}, independently; the
        tokens of one step are drawn independently given the earlier ones. So p_T(x) is a sum over ordered set
        partitions (B_1, ..., B_j) of the positions of P_T(B) prod_m prod_{l in B_m} p(x_l | x_{B_<m}), with
        P_T(B) = sum_{i_1 < ... < i_j} prod_m q_{i_m}^|B_m|. Small V^L and L only (the partitions grow as L!).
        """
        xs = self.all_sequences()
        length = self.length
        known_sets = list(itertools.product([False, True], repeat=length))
        cond = {}
        for known in known_sets:
            z = torch.where(torch.tensor(known), xs, self.vocab)
            cond[known] = self.posterior(z).gather(-1, xs.unsqueeze(-1)).squeeze(-1)
        t = torch.arange(steps, 0, -1, dtype=f64) / steps
        q = schedule.alpha(t - 1 / steps) - schedule.alpha(t)
        law = torch.zeros(xs.shape[0], dtype=f64)
        for labels in itertools.product(range(length), repeat=length):
            blocks = max(labels) + 1
            if len(set(labels)) != blocks:
                continue
            log_p, known = torch.zeros(xs.shape[0], dtype=f64), [False] * length
            for m in range(blocks):
                block = [pos for pos in range(length) if labels[pos] == m]
                log_p = log_p + cond[tuple(known)][:, block].sum(1)
                known = [k or pos in block for pos, k in enumerate(known)]
            law += _ordered_weight(q, [labels.count(m) for m in range(blocks)]) * log_p.exp()
        return law


def _ordered_weight(q: Tensor, sizes: list[int]) -> float:
    """sum over steps i_1 < ... < i_j of prod_m q[i_m] ** sizes[m] (a running sum over the steps)."""
    total = torch.ones_like(q)  # before the first block: weight 1 at every step
    for m, size in enumerate(sizes):
        earlier = torch.cat([torch.ones(1, dtype=f64) if m == 0 else torch.zeros(1, dtype=f64), total[:-1]])
        total = (earlier * q**size).cumsum(0)
    return float(total[-1])


def _normed(p: Tensor) -> Tensor:
    """p divided by its sum over the last axis."""
    return p / p.sum(-1, keepdim=True)

