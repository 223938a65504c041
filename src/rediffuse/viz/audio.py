"""Pictures of sound: a grid of spectrograms (one row per class) and waveform-over-spectrogram panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from rediffuse.audio.spectral import TOP_DB, spectrogram_db
from rediffuse.viz import _upscale, figure, image_grid, save_figure, save_image


def spectrogram_images(x: Tensor, n_fft: int = 256, hop: int = 64) -> Tensor:
    """Waveforms [N, 1, L] as grey spectrogram images [N, 1, F, T] in [-1, 1], low frequencies at the bottom."""
    db = spectrogram_db(x.detach().cpu(), n_fft, hop).flip(1)
    return (db / (TOP_DB / 2) + 1.0).unsqueeze(1)


def spectrogram_grid_png(path: str | Path, x: Tensor, labels: Tensor | None = None, nrow: int | None = None
                         ) -> Path:
    """A grid of the clips' spectrograms (one row per class when labelled), as a PNG."""
    return save_image(_upscale(image_grid(spectrogram_images(x), nrow, labels), 512), path)


def waveforms_png(path: str | Path, x: Tensor, rate: int, labels: Tensor | None = None, shown: int = 4) -> Path:
    """The first `shown` clips, each as its waveform above its spectrogram (time in seconds), as a PNG."""
    k = min(shown, len(x))
    fig = figure(3.2 * k, 4.2)
    clips = x[:k].detach().cpu().double().reshape(k, -1).numpy()
    spectra = spectrogram_images(x[:k]).squeeze(1).numpy()
    seconds = clips.shape[1] / rate
    for i in range(k):
        top = fig.add_subplot(2, k, i + 1)
        top.plot(np.arange(clips.shape[1]) / rate, clips[i], lw=0.4)
        top.set_xlim(0, seconds)
        top.set_ylim(-1, 1)
        top.set_title(f"sample {i}" + ("" if labels is None else f", class {int(labels[i])}"), fontsize=9)
        bottom = fig.add_subplot(2, k, k + i + 1)
        bottom.imshow(spectra[i], aspect="auto", cmap="magma", extent=(0, seconds, 0, rate / 2000), vmin=-1, vmax=1)
        bottom.set_xlabel("time (s)", fontsize=8)
        if i == 0:
            top.set_ylabel("amplitude", fontsize=8)
            bottom.set_ylabel("kHz", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
