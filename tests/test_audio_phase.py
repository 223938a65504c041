"""Phase from magnitude by gradient heap integration, against the true STFT phase of a synthetic voice."""

from __future__ import annotations

import math

import pytest
import torch

import rediffuse.audio.phase as phase_module
from rediffuse.audio.codec import MelCodec, codec_from_config
from rediffuse.audio.phase import phase_steps, pghi
from rediffuse.audio.spectral import griffin_lim, stft_power
from helpers import voice

N_FFT, HOP = 256, 128


def true_stft(x: torch.Tensor) -> torch.Tensor:
    """torch.stft of clips [1, 1, L] as the codec computes it (Hann, centred frames), in float64."""
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    return torch.stft(x.reshape(1, -1).double(), N_FFT, HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)


def wrapped(d: torch.Tensor) -> torch.Tensor:
    """Angles folded into [-pi, pi)."""
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


def gradient_errors(spec: torch.Tensor) -> tuple[float, float]:
    """Mean |true - predicted| phase step between loud neighbours (> 0.1 of the peak), along time and frequency."""
    mag, phase = spec.abs(), spec.angle()
    per_frame, per_bin = phase_steps(mag, N_FFT, HOP)
    loud = mag > 0.1 * mag.max()
    along_time = loud[..., 1:] & loud[..., :-1]
    along_freq = loud[:, 1:] & loud[:, :-1]
    time_error = wrapped(phase.diff(dim=2) - 0.5 * (per_frame[..., 1:] + per_frame[..., :-1]))[along_time]
    freq_error = wrapped(phase.diff(dim=1) - 0.5 * (per_bin[:, 1:] + per_bin[:, :-1]))[along_freq]
    return float(time_error.abs().mean()), float(freq_error.abs().mean())


def test_the_log_magnitude_predicts_the_true_phase_steps_and_only_with_the_hann_lambda(monkeypatch):
    spec = true_stft(voice(0.2, 0.0, 1.0))
    time_error, freq_error = gradient_errors(spec)
    assert time_error < 0.3 and freq_error < 0.05  # measured 0.17 and 0.018 rad (random phase: pi / 2)
    for wrong in (0.1, 0.5):  # the Gaussian of another width predicts worse (1.59 and 0.83 rad along time)
        monkeypatch.setattr(phase_module, "HANN_LAMBDA", wrong)
        assert gradient_errors(spec)[0] > 2 * time_error


def mismatch(magnitude: torch.Tensor, x: torch.Tensor) -> float:
    """Spectral convergence: || |STFT x| - magnitude || / || magnitude ||."""
    return float((stft_power(x, N_FFT, HOP).sqrt() - magnitude).norm() / magnitude.norm())


def test_heap_integration_rebuilds_a_voice_without_iterations_and_helps_griffin_lim():
    magnitude = true_stft(voice(0.2, 0.0, 1.0)).abs()
    start = pghi(magnitude, N_FFT, HOP)
    assert start.shape == magnitude.shape and start.dtype == magnitude.dtype
    plain = [mismatch(magnitude, griffin_lim(magnitude, N_FFT, HOP, 8192, k)) for k in (0, 32)]
    helped = [mismatch(magnitude, griffin_lim(magnitude, N_FFT, HOP, 8192, k, phase=start)) for k in (0, 32)]
    assert helped[0] < 0.1 < 0.5 < plain[0]  # measured 0.038 against 0.82 from zero phase
    assert helped[0] < plain[1]  # no iterations beat 32 from zero (0.091)
    assert helped[1] < 0.5 * plain[1]  # and 32 from it do better still (0.010)


def test_silence_gets_zero_phase_and_decodes_to_silence():
    magnitude = true_stft(voice(0.2, 0.3, 0.6)).abs()
    start = pghi(magnitude, N_FFT, HOP)
    assert torch.all(start[magnitude < 1e-5 * magnitude.max()] == 0)
    assert torch.all(pghi(torch.zeros(2, 129, 5), N_FFT, HOP) == 0)


def test_the_codec_can_start_griffin_lim_from_the_integrated_phase():
    codec = MelCodec(rate=8000, length=8192, phase="pghi")
    assert codec_from_config(codec.config()) == codec
    assert codec_from_config({k: v for k, v in codec.config().items() if k != "phase"}).phase == "zero"  # old runs
    x = voice()
    back = codec.decode(codec.encode(x))
    assert abs(float(back.square().mean().sqrt() / x.square().mean().sqrt()) - 1) < 0.05
    with pytest.raises(ValueError, match="choose zero or pghi"):
        MelCodec(rate=8000, length=8192, phase="random")
