"""Phase from STFT magnitude without iterations: phase gradient heap integration (PGHI).

Průša, Balazs & Søndergaard 2017 ("A noniterative method for reconstruction of phase from STFT magnitude",
IEEE/ACM TASLP 25(5)). For a Gaussian window exp(-pi t^2 / lambda) the STFT is, up to a factor, an entire
function of x - i lambda omega, so the Cauchy-Riemann equations tie the phase's gradient to the log-magnitude's:
with the phase referred to the window's centre,
    d phi / dx     = (1 / lambda) d log|V| / d omega + 2 pi omega,
    d phi / domega = -lambda d log|V| / dx,
(x in samples, omega in cycles per sample). A Hann window of n_fft samples behaves like the Gaussian with
lambda = 0.25645 n_fft^2 (the paper's Table I). The phase is then integrated from the loudest coefficient
outwards, always continuing from the loudest one already reached (a max-heap), by the trapezoid rule, so
the integration runs along ridges where the gradients are reliable. torch.stft refers each frame's phase to
its first sample rather than its centre (`center=True` puts the centre n_fft / 2 later), which adds pi per
bin along frequency.
"""

from __future__ import annotations

import heapq
import math

import torch
from torch import Tensor

HANN_LAMBDA = 0.25645  # lambda / n_fft^2 of the Gaussian closest to a Hann window (Průša et al. 2017, Table I)


def phase_steps(magnitude: Tensor, n_fft: int, hop: int, floor: float = 1e-12) -> tuple[Tensor, Tensor]:
    """(the phase advance from each frame to the next, from each bin to the next), both [B, F, T] in radians,
    of STFT magnitudes [B, F, T] (Hann window of n_fft samples, hop samples between frames, torch.stft's phase)."""
    lam = HANN_LAMBDA * n_fft**2
    log_mag = torch.log(magnitude.to(torch.float64).clamp(min=floor))
    bins = torch.arange(magnitude.shape[1], dtype=torch.float64, device=magnitude.device)[:, None]
    along_freq, along_time = torch.gradient(log_mag, dim=(1, 2))  # central differences, one-sided at the ends
    per_frame = hop * (n_fft / lam * along_freq + 2.0 * math.pi * bins / n_fft)
    per_bin = -lam / (n_fft * hop) * along_time + math.pi
    return per_frame, per_bin


def _integrate(mag: list[list[float]], per_frame: list[list[float]], per_bin: list[list[float]],
               threshold: float) -> list[list[float]]:
    """One clip's phase [F][T]: heap integration from the loudest coefficient; those at or below threshold get 0."""
    rows, cols = len(mag), len(mag[0])
    phase = [[0.0] * cols for _ in range(rows)]
    done = [[m <= threshold for m in row] for row in mag]
    order = sorted(((-mag[f][t], f, t) for f in range(rows) for t in range(cols) if not done[f][t]))
    heap: list[tuple[float, int, int]] = []
    for seed in order:
        if done[seed[1]][seed[2]]:
            continue
        done[seed[1]][seed[2]] = True  # a new island: its loudest coefficient keeps phase 0
        heap.append(seed)
        while heap:
            _, f, t = heapq.heappop(heap)
            here = phase[f][t]
            for g, u, step in ((f, t + 1, 0.5 * (per_frame[f][t] + per_frame[f][t + 1]) if t + 1 < cols else 0.0),
                               (f, t - 1, -0.5 * (per_frame[f][t] + per_frame[f][t - 1]) if t > 0 else 0.0),
                               (f + 1, t, 0.5 * (per_bin[f][t] + per_bin[f + 1][t]) if f + 1 < rows else 0.0),
                               (f - 1, t, -0.5 * (per_bin[f][t] + per_bin[f - 1][t]) if f > 0 else 0.0)):
                if 0 <= g < rows and 0 <= u < cols and not done[g][u]:
                    done[g][u] = True
                    phase[g][u] = here + step
                    heapq.heappush(heap, (-mag[g][u], g, u))
    return phase


def pghi(magnitude: Tensor, n_fft: int, hop: int, tolerance: float = 1e-5) -> Tensor:
    """Phases [B, F, T] for STFT magnitudes [B, F, T] by phase gradient heap integration (coefficients below
    `tolerance` times their clip's largest get phase 0)."""
    per_frame, per_bin = phase_steps(magnitude, n_fft, hop)
    out = []
    for mag, frames, bins in zip(magnitude.double().cpu(), per_frame.cpu(), per_bin.cpu()):
        threshold = tolerance * float(mag.max())
        out.append(_integrate(mag.tolist(), frames.tolist(), bins.tolist(), threshold))
    return torch.tensor(out, dtype=magnitude.dtype, device=magnitude.device)
