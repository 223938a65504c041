"""How loud clips are and how silent their pauses, the first things a listener hears, and the gain that matches
one level to another (issue 41)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

FRAME = 256  # samples per frame (32 ms at 8 kHz)
FLOOR_DB = -120.0  # frame energies below this many dB under the loudest frame count as this


@dataclass(frozen=True)
class Levels:
    """Medians over clips: RMS, peak |sample|, and the quietest quarter of frames in dB below the loudest frame."""

    rms: float
    peak: float
    silence_db: float

    def to_dict(self) -> dict[str, float]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


def frame_db(clips: Tensor, frame: int = FRAME) -> Tensor:
    """Each frame's mean energy in dB below its clip's loudest frame [N, frames], floored at FLOOR_DB (a silent
    clip is all FLOOR_DB)."""
    x = clips.reshape(len(clips), -1).double()
    energy = x[:, : x.shape[1] // frame * frame].reshape(len(x), -1, frame).square().mean(-1)
    loudest = energy.amax(1, keepdim=True)
    ratio = torch.where(loudest > 0, energy / loudest.clamp(min=1e-300), torch.zeros_like(energy))
    return (10.0 * torch.log10(ratio.clamp(min=1e-300))).clamp(min=FLOOR_DB)


def clip_rms(clips: Tensor) -> Tensor:
    """Each clip's root-mean-square amplitude [N] (float64) of clips [N, 1, L] or [N, L]."""
    return clips.reshape(len(clips), -1).double().square().mean(1).sqrt()


def clip_peak(clips: Tensor) -> Tensor:
    """Each clip's peak |sample| [N] (float64) of clips [N, 1, L] or [N, L]."""
    return clips.reshape(len(clips), -1).double().abs().amax(1)


def levels(clips: Tensor) -> Levels:
    """The level and silence figures of clips [N, 1, L] or [N, L]."""
    quietest_quarter = frame_db(clips.reshape(len(clips), -1)).quantile(0.25, dim=1)
    return Levels(rms=float(clip_rms(clips).median()), peak=float(clip_peak(clips).median()),
                  silence_db=float(quietest_quarter.median()))


def geometric_levels(clips: Tensor) -> tuple[float, float]:
    """Geometric means over clips of each clip's RMS and peak |sample| (silent clips left out): per-clip levels of
    speech spread over a factor of ten and more, and their logs' mean moves far less between draws than a median."""
    rms, peak = clip_rms(clips), clip_peak(clips)
    heard = peak > 0
    if not bool(heard.any()):
        raise ValueError("every clip is silent: no level to measure")
    return float(rms[heard].log().mean().exp()), float(peak[heard].log().mean().exp())


def matching_gain(measured: tuple[float, float], reference: tuple[float, float]) -> float:
    """The one gain that brings a (RMS, peak) level closest, in log amplitude, to a reference (RMS, peak): the
    geometric mean of the two ratios (both then miss by the same factor, the square root of the crest factors'
    ratio)."""
    if min(*measured, *reference) <= 0:
        raise ValueError(f"levels must be positive to match, got RMS {measured[0]:g} and peak {measured[1]:g} "
                         f"against {reference[0]:g} and {reference[1]:g}")
    return math.sqrt(reference[0] / measured[0] * reference[1] / measured[1])
