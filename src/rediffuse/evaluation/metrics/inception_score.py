"""Inception-score-style figures from a classifier's class probabilities: IS and modified IS (the SC09 pair)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import ArrayLike, as_features


def inception_score(probs: ArrayLike) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))) of class probabilities [N, K] (Salimans et al. 2016), p(y) their mean.

    1 when every sample gets the same distribution; K when each is certain and the classes are balanced.
    """
    p = _probabilities(probs)
    marginal = p.mean(dim=0, keepdim=True)
    return float(torch.exp(_kl(p, marginal).mean()))


def modified_inception_score(probs: ArrayLike) -> float:
    """mIS = exp(E_{x, x'} KL(p(y|x) || p(y|x'))) over all ordered pairs of samples (Gurumurthy et al. 2017,
    DeLiGAN), which also rewards diversity within a class; used with IS for SC09 audio (Donahue et al. 2019)."""
    p = _probabilities(probs)
    logs = torch.log(p.clamp(min=1e-30))
    entropy_term = (p * logs).sum(dim=1)  # sum_y p_i log p_i, per sample
    cross = p @ logs.T  # [i, j] = sum_y p_i log p_j
    n = len(p)
    kl = entropy_term[:, None] - cross  # KL(p_i || p_j); the diagonal is 0
    return float(torch.exp(kl.sum() / (n * n)))


def _kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p_i || q) per row, with 0 log 0 = 0."""
    return torch.where(p > 0, p * (torch.log(p.clamp(min=1e-30)) - torch.log(q.clamp(min=1e-30))), 0.0).sum(dim=1)


def _probabilities(probs: ArrayLike) -> Tensor:
    """probs as float64 [N, K] rows on the simplex; ValueError otherwise."""
    p = as_features(probs)
    if len(p) == 0:
        raise ValueError(f"expected class probabilities [N, K] with N >= 1, got shape {tuple(p.shape)}")
    if (p < 0).any() or not torch.allclose(p.sum(dim=1), torch.ones(len(p), dtype=p.dtype), atol=1e-6):
        raise ValueError("class probabilities must be non-negative and sum to 1 per row (apply softmax first)")
    return p
