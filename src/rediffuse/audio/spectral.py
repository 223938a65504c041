"""Spectrograms from torch alone: STFT power, an HTK mel filterbank, log-mel in dB, and log-mel "images".

The mel scale is HTK's, m(f) = 2595 log10(1 + f / 700) (O'Shaughnessy 1987), with triangular filters whose
peaks (1) lie at n_mels points evenly spaced in mel between f_min and f_max and whose feet are the
neighbouring peaks. The STFT uses a periodic Hann window of n_fft samples, centred frames (reflect padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

N_FFT, HOP, N_MELS = 512, 256, 32  # the classifier's features: 32 mels x 32 frames of 8192 samples at 8 kHz
TOP_DB = 80.0  # a log-mel image spans [max - TOP_DB, max] dB


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel of frequencies f in Hz."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """Frequency in Hz of HTK mels m (the inverse of hz_to_mel)."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular mel filters [n_fft // 2 + 1, n_mels] (float64) over the STFT's frequency bins."""
    f_max = rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= rate / 2 or n_mels < 1:
        raise ValueError(f"need 0 <= f_min < f_max <= rate / 2 and n_mels >= 1, got f_min {f_min}, f_max {f_max}, "
                         f"rate {rate}, n_mels {n_mels}")
    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    peaks = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = peaks[:-2], peaks[1:-1], peaks[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def stft_power(x: Tensor, n_fft: int = N_FFT, hop: int = HOP) -> Tensor:
    """|STFT|^2 [B, n_fft // 2 + 1, frames] of waveforms x [B, L] (Hann window, centred frames)."""
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    return spec.abs().pow(2)


def log_mel(x: Tensor, rate: int, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS) -> Tensor:
    """Mel power in dB [B, n_mels, frames] of waveforms x [B, L] (10 log10, floored at 1e-10)."""
    bank = mel_filterbank(n_fft, n_mels, rate).to(x.device, x.dtype)
    mel = torch.einsum("bft,fm->bmt", stft_power(x, n_fft, hop), bank)
    return 10.0 * torch.log10(mel.clamp(min=1e-10))


def centre_fit(x: Tensor, length: int) -> Tensor:
    """Clips [B, L] (or [B, 1, L]) as float [B, length]: centre-cropped, or zero-padded equally on both sides."""
    x = x.reshape(len(x), -1).float()
    if x.shape[1] > length:
        start = (x.shape[1] - length) // 2
        return x[:, start: start + length]
    left = (length - x.shape[1]) // 2
    return F.pad(x, (left, length - x.shape[1] - left))


def log_mel_image(x: Tensor, rate: int, size: int = N_MELS, hop: int = HOP) -> Tensor:
    """Square log-mel images [B, 1, size, size] in [-1, 1] of waveforms x [B, 1, L] or [B, L].

    The clip is centre-cropped or zero-padded to size * hop samples, giving `size` frames of `size` mels;
    each image is in dB below its own maximum, clamped at TOP_DB and mapped linearly onto [-1, 1]
    (so loudness does not matter).
    """
    x = centre_fit(x, size * hop)
    db = log_mel(x, rate, 2 * hop, hop, size)[:, :, :size]
    db = torch.maximum(db - db.amax(dim=(1, 2), keepdim=True), torch.tensor(-TOP_DB, device=db.device))
    return (db / (TOP_DB / 2) + 1.0).unsqueeze(1)


def spectrogram_db(x: Tensor, n_fft: int = 256, hop: int = 64) -> Tensor:
    """Linear-frequency power in dB below each clip's maximum, clamped at -TOP_DB: [B, n_fft // 2 + 1, frames]
    of waveforms x [B, L] (for pictures)."""
    db = 10.0 * torch.log10(stft_power(x.reshape(len(x), -1).float(), n_fft, hop).clamp(min=1e-10))
    return torch.clamp(db - db.amax(dim=(1, 2), keepdim=True), min=-TOP_DB)


def griffin_lim(magnitude: Tensor, n_fft: int, hop: int, length: int, iters: int = 32,
                momentum: float = 0.99, phase: Tensor | None = None) -> Tensor:
    """Waveforms [B, length] whose STFT magnitude approximates `magnitude` [B, n_fft // 2 + 1, frames].

    Griffin & Lim 1984 with the momentum of Perraudin, Balazs & Sondergaard 2013 ("A fast Griffin-Lim
    algorithm", alpha = 0.99), from `phase` (default zero, so the result is deterministic); the same Hann
    window and centred frames as `stft_power`.
    """
    window = torch.hann_window(n_fft, dtype=magnitude.dtype, device=magnitude.device)
    spec = magnitude.to(torch.complex64 if magnitude.dtype == torch.float32 else torch.complex128)
    if phase is not None:
        spec = spec * torch.exp(1j * phase.to(magnitude.dtype))
    previous = torch.zeros_like(spec)
    for _ in range(iters):
        x = torch.istft(spec, n_fft, hop, window=window, center=True, length=length)
        rebuilt = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
        accelerated = rebuilt + momentum * (rebuilt - previous)
        previous = rebuilt
        spec = magnitude * torch.exp(1j * torch.angle(accelerated))
    return torch.istft(spec, n_fft, hop, window=window, center=True, length=length)


def mel_to_power(mel: Tensor, bank: Tensor, iters: int = 20) -> Tensor:
    """Non-negative linear-frequency power [B, F, T] whose mel projection approximates mel [B, M, T].

    Non-negative least squares by the multiplicative updates of Lee & Seung 2001 ("Algorithms for non-negative
    matrix factorization", P <- P * (W m) / (W W^T P), W = `bank` [F, M]), from each mel band's power spread
    evenly over its filter. Unlike the clamped pseudo-inverse, an error in the mel values is not amplified
    into louder sound or hiss (a 0.45 dB error made the pseudo-inverse's FSDD clips 1.29x louder; this 1.01x).
    """
    w = bank.to(torch.float64)
    target = mel.to(torch.float64).clamp(min=0.0)
    power = torch.einsum("bmt,fm->bft", target / w.sum(0).clamp(min=1e-12)[None, :, None], w)
    numerator = torch.einsum("bmt,fm->bft", target, w)
    for _ in range(iters):
        projected = torch.einsum("bft,fm->bmt", power, w)
        power = power * numerator / torch.einsum("bmt,fm->bft", projected, w).clamp(min=1e-300)
    return power.to(mel.dtype)
