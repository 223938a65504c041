"""One diffusion over a table's rows: Gaussian noise on the numbers, absorbing-state masking on the categories,
both driven by one time t in [0, 1] (as TabDiff, Shi et al. 2025, with fixed rather than learned schedules).

- Numbers: sigma(t) = (s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho, rho = 7, s_min = 0.002, s_max = 80
  (Karras et al. 2022's grid as a function of t); the data are normal scores, so sigma_data = 1 and the EDM
  preconditioning (c_skip, c_out, c_in, c_noise = ln(sigma) / 4) makes the loss ||F - F*||^2 with unit weight.
- Categories: alpha(t) = 1 - t^p, each cell masked with probability t^p (p = 1 by default: linear, MDLM's; p is
  the categories' schedule against the numbers'); the loss is the NELBO term of masked diffusion,
  -log p(x | z_t) p / t on masked cells (Sahoo et al. 2024, MDLM, eq. 10 with -alpha' / (1 - alpha) = p / t). With
  exact conditionals its expectation over t is the data's entropy for every p (the NELBO does not depend on the
  schedule, only on its ends).
- A number's missing cell (its flag says missing) adds no loss: its value is undefined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
T_MIN = 1e-3  # the smallest training time (the 1/t weight's bound)


def sigma_of(t: Tensor | float) -> Tensor:
    """The numbers' noise level at time t."""
    t = torch.as_tensor(t, dtype=torch.float64)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    return (lo + t * (hi - lo)) ** RHO


@dataclass(frozen=True)
class Layout:
    """Where a row's parts sit in x: `numbers` normal scores, then one code per categorical column (the counts
    of categories in `cardinalities`); `flags[j]` is the category column holding number j's missing flag, or -1."""

    numbers: int
    cardinalities: tuple[int, ...]
    flags: tuple[int, ...]

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the numbers [B, n], the codes [B, c] as long)."""
        return x[:, : self.numbers], x[:, self.numbers:].round().long()

    def logits(self, out: Tensor) -> list[Tensor]:
        """A network output's per-column logits [B, card_j]."""
        return list(out[:, self.numbers:].split(list(self.cardinalities), 1))


class TableDenoiser(nn.Module):
    """(D(x_num, sigma), log-probabilities of each categorical column) from a network over noisy rows."""

    def __init__(self, net: nn.Module, layout: Layout, mask_power: float = 1.0) -> None:
        super().__init__()
        self.net, self.layout, self.mask_power = net, layout, float(mask_power)

    def forward(self, numbers: Tensor, codes: Tensor, t: Tensor, cond: Tensor | None = None
                ) -> tuple[Tensor, list[Tensor]]:
        """D of the numbers [B, n] and log p of each column [B, card_j], for noisy numbers at sigma(t), codes
        with mask ids (a column's mask id is its cardinality) and times t [B]."""
        sigma = sigma_of(t).to(numbers.dtype)[:, None]
        c_in, c_skip, c_out = 1 / (sigma**2 + 1).sqrt(), 1 / (sigma**2 + 1), sigma / (sigma**2 + 1).sqrt()
        x = torch.cat([numbers * c_in, codes.to(numbers.dtype)], 1)
        out = self.net(x, sigma[:, 0].log() / 4, cond).float()
        d = c_skip * numbers + c_out * out[:, : self.layout.numbers]
        return d, [F.log_softmax(lg, 1) for lg in self.layout.logits(out)]


def noised(x: Tensor, layout: Layout, t: Tensor, noise: Tensor, u: Tensor, mask_power: float = 1.0
           ) -> tuple[Tensor, Tensor]:
    """(numbers + sigma(t) noise, codes masked where u < t^p) of clean rows x at times t [B] (u [B, c] uniform)."""
    numbers, codes = layout.split(x)
    sigma = sigma_of(t).to(x.dtype)[:, None]
    masks = torch.tensor(layout.cardinalities, device=x.device).expand_as(codes)
    return numbers + sigma * noise, torch.where(u < t[:, None].to(u.dtype) ** mask_power, masks, codes)


def table_loss(model: TableDenoiser, x: Tensor, t: Tensor, noise: Tensor, u: Tensor,
               cond: Tensor | None = None) -> Tensor:
    """The per-row loss [B]: the numbers' preconditioned squared error (mean over present cells) plus the
    categories' masked NELBO (mean over columns), at times t [B]."""
    layout = model.layout
    numbers, codes = layout.split(x)
    power = model.mask_power
    noisy, masked = noised(x, layout, t, noise, u, power)
    d, log_probs = model(noisy, masked, t, cond)
    sigma = sigma_of(t).to(x.dtype)[:, None]
    weight = (sigma**2 + 1) / sigma**2  # lambda(sigma) c_out^2 = 1: D's error in F's units
    error = (d - numbers) ** 2 * weight
    present = torch.ones_like(error)
    for j, flag in enumerate(layout.flags):
        if flag >= 0:
            present[:, j] = (codes[:, flag] == 0).to(error.dtype)
    loss = (error * present).sum(1) / present.sum(1).clamp(min=1) if layout.numbers else x.new_zeros(len(x))
    if layout.cardinalities:
        nll = torch.stack([-lp.gather(1, codes[:, j: j + 1])[:, 0] for j, lp in enumerate(log_probs)], 1)
        is_masked = (masked == torch.tensor(layout.cardinalities, device=x.device)).to(nll.dtype)
        loss = loss + (nll * is_masked).sum(1) * power / t.to(nll.dtype) / len(layout.cardinalities)
    return loss


def training_times(n: int, generator: torch.Generator) -> Tensor:
    """Stratified times in [T_MIN, 1]: (u + i / n) mod 1, stretched (float64)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    t = (u + torch.arange(n, dtype=torch.float64) / n) % 1.0
    return T_MIN + (1 - T_MIN) * t

