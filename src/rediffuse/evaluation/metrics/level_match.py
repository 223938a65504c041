"""Whether per-clip levels (RMS or peak) of samples follow the recordings' whole distribution, not only a median.

Per-clip levels of speech are spread over more than a factor of ten (quiet and loud speakers), so a median of a
few hundred clips moves by 10% between draws. The figures here compare the logs of the levels, where a gain is a
shift: the geometric-mean ratio with its standard error, the ratio of the spreads, quantile ratios, and the
1-D Wasserstein distance of the logs as a factor, which is zero only when the two distributions agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .sliced import wasserstein_1d_pp

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class LevelMatch:
    """Samples' per-clip levels against the recordings': ratios (samples / real) and the transport factor."""

    ratio: float  # exp(mean log samples - mean log real): the geometric-mean ratio
    ratio_se: float  # standard error of log(ratio) from both sets' sizes (about the relative error of `ratio`)
    spread: float | None  # standard deviation of log samples / that of log real (None when real has none)
    distance: float  # exp(W1 between the two sets of logs) - 1: the mean factor a clip's level moves to match
    quantiles: tuple[float, ...]  # samples / real at QUANTILES

    def to_dict(self) -> dict[str, object]:
        """The figures as a JSON-ready dict (quantiles keyed by percent)."""
        out: dict[str, object] = asdict(self)
        out["quantiles"] = {f"{round(100 * q)}%": r for q, r in zip(QUANTILES, self.quantiles)}
        return out


def level_match(samples: Tensor, real: Tensor) -> LevelMatch:
    """Compare positive per-clip levels of samples [N] with those of real clips [M] (each N, M >= 2)."""
    if len(samples) < 2 or len(real) < 2:
        raise ValueError(f"level_match needs at least 2 clips on each side; got {len(samples)} and {len(real)}")
    floor = torch.finfo(torch.float64).tiny  # a silent clip counts as the smallest positive level, not -inf
    s, r = (v.double().clamp(min=floor).log() for v in (samples, real))
    se = math.sqrt(float(s.var()) / len(s) + float(r.var()) / len(r))
    qs = torch.tensor(QUANTILES, dtype=torch.float64)
    ratios = (s.quantile(qs) - r.quantile(qs)).exp()
    w1 = float(wasserstein_1d_pp(s.sort().values[:, None], r.sort().values[:, None], 1.0)[0])
    spread = float(s.std() / r.std()) if float(r.std()) > 0 else None
    return LevelMatch(ratio=math.exp(float(s.mean() - r.mean())), ratio_se=se, spread=spread,
                      distance=math.expm1(w1), quantiles=tuple(float(v) for v in ratios))
