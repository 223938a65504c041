"""How voiced clips sound: the cepstral peak prominence (CPP), the height of the pitch peak of the cepstrum above
its trend (Hillenbrand, Cleveland & Erickson 1994, "Acoustic correlates of breathy vocal quality"; Hillenbrand &
Houde 1996). Speech from vocal folds has harmonics at multiples of its pitch, a ripple across the log spectrum that
the cepstrum turns into one peak at the pitch period; whispered or noise-excited sound has none. Issue 41's samples
have the spectral envelope of speech without the harmonics, which the levels and both classifiers do not see.

Per frame (a Hann window of `frame` samples, hop frame / 4): the log power spectrum in dB (floored 120 dB under
the clip's largest value), its power cepstrum in dB (10 log10 of the squared inverse FFT of the dB spectrum, lags
in samples) smoothed over 5 frames and 3 lags (the smoothed CPP of Hillenbrand & Houde), a least-squares line
over lags from 1 ms to half the frame, and the largest excess of the cepstrum over that line at the periods of a
60-330 Hz pitch. A clip's CPP is the mean over its frames within 20 dB of its loudest frame (the voiced part of a
spoken word, not the pauses). On the tests' synthetic voice it is 20.3 dB, whispered 5.5-5.7 dB; white noise
gives about 5.8 dB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PITCH_HZ = (60.0, 330.0)  # the pitch range searched (Praat's default for CPP)
LOUD_DB = 20.0  # frames this close to the loudest frame count
FLOOR_DB = 120.0  # spectrum values further below the clip's largest are raised to it (exact zeros have no log)


def smoothed(cepstrum: Tensor, time: int, quefrency: int) -> Tensor:
    """A moving average [N, frames, Q] over `time` frames and `quefrency` bins (odd widths, shortened at the edges)."""
    x = cepstrum
    for dim, width in ((1, time), (2, quefrency)):
        moved = x.movedim(dim, -1)
        flat = F.avg_pool1d(moved.reshape(-1, 1, moved.shape[-1]), width, stride=1, padding=width // 2,
                            count_include_pad=False)
        x = flat.reshape(moved.shape).movedim(-1, dim)
    return x


def frame_cpp(clips: Tensor, rate: int, frame: int = 512, time: int = 5, quefrency: int = 3
              ) -> tuple[Tensor, Tensor]:
    """(CPP in dB [N, frames], each frame's energy in dB below its clip's loudest frame [N, frames]) of clips
    [N, L] or [N, 1, L] at `rate` Hz."""
    x = clips.reshape(len(clips), -1).double()
    frame = min(frame, x.shape[1])
    hop = max(1, frame // 4)
    frames = x.unfold(1, frame, hop) * torch.hann_window(frame, periodic=True, dtype=torch.float64)
    power = torch.fft.rfft(frames, dim=-1).abs().square()
    energy = power.sum(-1)
    loud = 10 * torch.log10(energy.clamp(min=1e-30) / energy.amax(1, keepdim=True).clamp(min=1e-30))
    floor = power.amax(dim=(1, 2), keepdim=True).clamp(min=1e-30) * 10 ** (-FLOOR_DB / 10)
    spectrum_db = 10 * torch.log10(torch.maximum(power, floor))  # relative to the clip: no gain changes it
    real_cepstrum = torch.fft.irfft(spectrum_db, n=frame, dim=-1)[..., : frame // 2 + 1]  # index = lag in samples
    cepstrum = smoothed(10 * torch.log10(real_cepstrum.square().clamp(min=1e-20)), time, quefrency)
    q = torch.arange(cepstrum.shape[-1], dtype=torch.float64)  # quefrency in samples
    fit = (q >= rate / 1000) & (q <= frame // 2)
    design = torch.stack([q[fit], torch.ones_like(q[fit])], 1)
    coef = torch.linalg.lstsq(design, cepstrum[..., fit].reshape(-1, int(fit.sum())).T).solution  # [2, N*frames]
    trend = (q[:, None] * coef[0] + coef[1]).T.reshape(cepstrum.shape)
    search = (q >= rate / PITCH_HZ[1]) & (q <= rate / PITCH_HZ[0])
    return (cepstrum - trend)[..., search].amax(-1), loud


def cpp(clips: Tensor, rate: int, frame: int = 512) -> Tensor:
    """Each clip's CPP in dB [N]: the mean over its frames within LOUD_DB of its loudest (a silent clip: 0)."""
    values, loud = frame_cpp(clips, rate, frame)
    keep = (loud > -LOUD_DB).double()
    return (values * keep).sum(1) / keep.sum(1).clamp(min=1)
