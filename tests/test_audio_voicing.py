"""The cepstral peak prominence: a voice with harmonics against the same word whispered, noise eating the
harmonics, gain invariance, silence, and the figure in an audio eval."""

from __future__ import annotations

import torch

from rediffuse.audio.voicing import cpp, frame_cpp
from helpers import voice


def whispered(seed: int) -> torch.Tensor:
    """The voice's word (same place, same Hann envelope) excited by white noise instead of a pitch [1, 8192]."""
    envelope = torch.zeros(8192)
    a, b = int(0.25 * 8192), int(0.75 * 8192)
    envelope[a:b] = torch.hann_window(b - a, periodic=False)
    return (0.05 * torch.randn(8192, generator=torch.Generator().manual_seed(seed)) * envelope).view(1, -1)


def test_a_voice_stands_far_above_its_whisper_and_noise_brings_it_down():
    v = voice().view(1, -1)
    voiced = float(cpp(v, 8000))
    whispers = cpp(torch.cat([whispered(s) for s in range(4)]), 8000)
    assert voiced > 15 and bool((whispers < 7).all()) and voiced - float(whispers.max()) > 10
    noise = torch.randn(8192, generator=torch.Generator().manual_seed(9)).view(1, -1)
    noisy = [float(cpp(v + s * noise, 8000)) for s in (0.01, 0.03, 0.1)]
    assert noisy[0] > noisy[1] > noisy[2] and noisy[2] < 9


def test_cpp_ignores_gain_and_pauses_and_a_silent_clip_is_zero():
    v = voice().view(1, -1)
    assert torch.allclose(cpp(torch.cat([v, 0.1 * v, 4 * v]), 8000), cpp(v, 8000).expand(3), atol=1e-3)
    values, loud = frame_cpp(v, 8000)
    assert values.shape == loud.shape and bool((loud[0, :8] < -100).all())  # the leading pause is not counted
    assert float(cpp(torch.zeros(1, 8192), 8000).abs()) < 1e-9
    assert cpp(v[:, :300], 8000).shape == (1,)  # a clip shorter than a frame is one frame
