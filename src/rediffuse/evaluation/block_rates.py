"""Choosing block diffusion's clipped masking rates [beta, omega] by the variance of the training loss.

BD3-LM (Arriola et al. 2025, section 5) trains with each block's masking rate drawn from U[beta, omega] and picks
the window whose loss estimate has the lowest variance (their search runs over windows of widths 0.5 to 0.9
during training; their choices: U[0.45, 0.95] for L' = 4 and U[0.3, 0.8] for L' = 16 on OpenWebText). Here a
model (a short pilot run, or any block run) scores every candidate window on windows of the training text: the
same per-window loss the objective minimises (clipped stratified times, redrawn masks), `draws` times over
`samples` windows, and its variance. Narrow windows near t = 0 are not candidates: the widths start at 0.5, as in
the paper, and the full window [0, 1] (the unclipped NELBO) is always one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rediffuse.core import block_diffusion as bd

WIDTHS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class RateScore:
    """One candidate window's loss: mean and variance of the per-window estimates (nats per token)."""

    low: float
    high: float
    mean: float
    variance: float


def rate_windows(widths: tuple[float, ...] = WIDTHS, grid: float = 0.05) -> list[tuple[float, float]]:
    """Every window [beta, beta + w] inside [0, 1] with w in widths and beta on the grid."""
    out = []
    for width in widths:
        for k in range(int(round((1.0 - width) / grid)) + 1):
            low = round(k * grid, 10)
            out.append((low, round(low + width, 10)))
    return out


@torch.no_grad()
def loss_variance(model: torch.nn.Module, windows: Tensor, candidates: list[tuple[float, float]], *,
                  draws: int = 4, seed: int = 0) -> list[RateScore]:
    """Each candidate's RateScore from `draws` clipped loss estimates of every window x [N, L] (the model's
    forward(z, x) gives SUBS log-probs; its block, schedule and mask_id define the process)."""
    if draws < 2 or len(windows) < 1:
        raise ValueError("the variance needs draws >= 2 and at least one window")
    scores = []
    for low, high in candidates:
        generator = torch.Generator(device=windows.device).manual_seed(seed)
        estimates = []
        for _ in range(draws):
            t = bd.block_times(len(windows), bd.blocks_of(windows.shape[1], model.block), generator, low, high,
                               windows.device)
            z = bd.noise_blocks(windows, t, model.block, model.schedule, model.mask_id, generator, low, high)
            estimates.append(bd.block_nelbo(model(z, windows), windows, z, t, model.schedule, model.mask_id,
                                            model.block).double())
        values = torch.cat(estimates)
        scores.append(RateScore(low, high, float(values.mean()), float(values.var())))
    return scores


def lowest_variance(scores: list[RateScore]) -> RateScore:
    """The candidate whose loss estimate varies least (ties: the wider, then the lower window)."""
    return min(scores, key=lambda s: (s.variance, -(s.high - s.low), s.low))
