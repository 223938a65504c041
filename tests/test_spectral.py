"""Spectrograms: the HTK mel scale, the filterbank's shape, tones landing in their band, loudness-free images."""

from __future__ import annotations

import math

import pytest
import torch

from rediffuse.audio.spectral import (hz_to_mel, log_mel, log_mel_image, mel_filterbank, mel_to_hz, spectrogram_db,
                                      stft_power)


def test_htk_mel_scale_and_its_inverse():
    assert float(hz_to_mel(0.0)) == 0.0
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    f = torch.tensor([10.0, 440.0, 3999.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)


def test_filterbank_triangles_peak_at_their_centres_and_tile_the_band():
    bank = mel_filterbank(512, 16, 8000)
    assert bank.shape == (257, 16) and bank.min() >= 0 and bank.max() <= 1
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(4000.0)), 18, dtype=torch.float64))[1:-1]
    bins = torch.linspace(0, 4000, 257, dtype=torch.float64)
    assert (bins[bank.argmax(dim=0)] - centres).abs().max() <= 4000 / 256  # within one bin of the centre
    inner = (bins > centres[0]) & (bins < centres[-1])
    assert torch.allclose(bank[inner].sum(dim=1), torch.ones(int(inner.sum()), dtype=torch.float64))  # overlap-add


def test_a_tone_lands_in_the_band_whose_centre_is_nearest():
    rate, n_mels = 8000, 32
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(4000.0)), n_mels + 2, dtype=torch.float64))[1:-1]
    for k in (5, 17, 28):
        t = torch.arange(8192, dtype=torch.float64) / rate
        x = torch.sin(2 * math.pi * float(centres[k]) * t)[None]
        mel = log_mel(x, rate, n_mels=n_mels)
        assert int(mel[0, :, 4:-4].mean(dim=1).argmax()) == k


def test_stft_power_of_a_constant_is_the_hann_windows_own_spectrum():
    p = stft_power(torch.ones(1, 2048, dtype=torch.float64))[0, :, 2:-2]  # frames away from the padded ends
    # the periodic Hann window's DFT is N/2 at bin 0, -N/4 at bin 1 and 0 beyond
    assert torch.allclose(p[0], torch.full_like(p[0], 256.0**2))
    assert torch.allclose(p[1], torch.full_like(p[1], 128.0**2))
    assert p[2:].max() < 1e-12


def test_log_mel_images_are_square_bounded_and_ignore_loudness():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 7000, generator=g) * 0.3
    image = log_mel_image(x, 8000)
    assert image.shape == (3, 1, 32, 32) and image.min() >= -1 and image.max() == 1
    assert torch.allclose(log_mel_image(0.1 * x, 8000), image, atol=1e-4)
    db = spectrogram_db(x[:, 0])
    assert db.max() == 0 and db.min() >= -80
