"""The second opinion on spoken digits (logistic regression on MFCC statistics) and the level and silence figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from rediffuse.evaluation.audio_opinion import second_classifier
from rediffuse.evaluation.features.cepstral import dct_matrix, summary, train_cepstral
from rediffuse.evaluation.metrics import FLOOR_DB, frechet_distance, levels
from helpers import FSDD

needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason="the shared FSDD recordings are not here")
RATE = 8000


def sine(freq: float, amplitude: float, n: int = 8192) -> torch.Tensor:
    """A sine [n] at RATE Hz (float64)."""
    return amplitude * torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / RATE)


def test_levels_of_known_signals():
    x = sine(500.0, 0.3)  # 500 Hz: a whole number of periods in every 256-sample frame
    assert levels(x.view(1, 1, -1)).rms == pytest.approx(0.3 / math.sqrt(2), rel=1e-6)
    assert levels(x.view(1, 1, -1)).peak == pytest.approx(0.3, rel=1e-3)
    quiet = x.clone()
    quiet[4096:] *= 10 ** (-40 / 20)  # the second half 40 dB down: its quarter-quantile frame is at -40 dB
    assert levels(quiet.view(1, -1)).silence_db == pytest.approx(-40.0, abs=0.01)
    padded = torch.cat([x[:4096], torch.zeros(4096)]).view(1, -1)  # half silence: the floor
    assert levels(padded).silence_db == FLOOR_DB
    both = torch.stack([quiet, padded.view(-1), x])  # medians over clips
    assert levels(both).silence_db == pytest.approx(-40.0, abs=0.01)
    assert levels(torch.zeros(2, 8192)).silence_db == FLOOR_DB  # a silent clip does not divide by zero


def test_the_dct_is_scipys_orthonormal_dct_ii():
    x = np.random.default_rng(0).normal(size=(3, 40))
    ours = (torch.from_numpy(x) @ dct_matrix(40, 13).T).numpy()
    assert np.allclose(ours, scipy.fft.dct(x, type=2, norm="ortho")[:, :13], atol=1e-12)


def voices(n: int, seed: int, hiss: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips [n, 1, 8192] of three 'digits': a 0.5 s tone in the middle of silence whose pitch (150, 220 or 330
    Hz, +-3%) and loudness (+-3 dB) vary per clip, with optional white hiss; and their labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    t = torch.arange(4000, dtype=torch.float64) / RATE
    clips = torch.zeros(n, 1, 8192, dtype=torch.float64)
    for i, y in enumerate(labels.tolist()):
        f = (150.0, 220.0, 330.0)[y] * (1 + 0.06 * (float(torch.rand(1, generator=g)) - 0.5))
        a = 0.1 * 10 ** ((6 * float(torch.rand(1, generator=g)) - 3) / 20)
        wave = sum(torch.sin(2 * math.pi * k * f * t) / k for k in (1, 2, 3))
        clips[i, 0, 2096:6096] = a * wave * torch.hann_window(4000, periodic=False, dtype=torch.float64)
    clips += hiss * torch.randn(clips.shape, generator=g, dtype=torch.float64)
    return clips.float(), labels


def test_the_second_classifier_learns_and_does_not_forgive_hiss_or_level():
    train_x, train_y = voices(60, 0)
    test_x, test_y = voices(30, 1)
    model = train_cepstral(train_x, train_y, (test_x, test_y))
    assert model.heldout_accuracy == 1.0 and summary(test_x).shape == (30, 200)
    real = model.features(train_x)
    clean = frechet_distance(model.features(test_x), real)
    hissy = frechet_distance(model.features(voices(30, 1, hiss=0.003)[0]), real)
    loud = frechet_distance(model.features(test_x * 2), real)
    assert hissy > 100 * clean and loud > 3 * clean  # it reads absolute energies, pauses included (measured 5x)


@needs_fsdd
def test_the_second_classifier_recognises_held_out_recordings():
    torch.set_num_threads(1)
    model, real, (held_x, held_y) = second_classifier(FSDD)
    assert model.heldout_accuracy >= 0.95 and real.shape == (2700, 200)
    g = torch.Generator().manual_seed(0)
    noisy = [model.accuracy((held_x + s * torch.randn(held_x.shape, generator=g)).clamp(-1, 1), held_y)
             for s in (0.003, 0.01, 0.03)]
    assert noisy[-1] < model.heldout_accuracy  # hiss is not forgiven
    print("held-out accuracy", model.heldout_accuracy, "with noise 0.003, 0.01, 0.03:", noisy)
