"""A second opinion on spoken digits from another family: logistic regression on MFCC statistics.

The project's FSDD classifier is a CNN on 32 x 32 log-mel images, each normalised to its own maximum, trained
with shift and scale augmentation. This one is linear, reads absolute log-mel energies (so a wrong level or hiss
in the pauses counts against a clip), and is fitted on clean `@train` recordings with no augmentation at all:
it cannot have learned to forgive what a model gets wrong. Its inputs are mel-frequency cepstral coefficients
(Davis & Mermelstein 1980: the orthonormal DCT-II of log mel energies) summarised per clip as their means over
eight equal stretches of time, their spread over time and their mean frame-to-frame change; the standardised
summary is also the feature vector for Frechet distance and precision/recall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rediffuse.audio.spectral import centre_fit, log_mel

RATE, LENGTH = 8000, 8192  # clips are read at 8 kHz, centre-cropped or padded to 8192 samples (as the CNN reads)
N_FFT, HOP, N_MELS, N_MFCC, SEGMENTS = 256, 128, 40, 20, 8
C = 0.1  # the inverse L2 strength of the logistic regression


def dct_matrix(n: int, keep: int) -> Tensor:
    """The first `keep` rows of the orthonormal DCT-II of length n [keep, n] (float64)."""
    k = torch.arange(keep, dtype=torch.float64)[:, None]
    m = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * k * (2 * m + 1) / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def cepstra(clips: Tensor) -> Tensor:
    """MFCCs [N, N_MFCC, frames] of 8 kHz clips [N, 1, L] or [N, L] (fitted to LENGTH samples)."""
    db = log_mel(centre_fit(clips, LENGTH).double(), RATE, N_FFT, HOP, N_MELS)  # floored at -100 dB
    return torch.einsum("km,bmt->bkt", dct_matrix(N_MELS, N_MFCC), db)


def summary(clips: Tensor) -> Tensor:
    """The per-clip statistics the classifier reads [N, N_MFCC * (SEGMENTS + 2)] (float64)."""
    c = cepstra(clips)
    frames = c.shape[2] // SEGMENTS * SEGMENTS
    segments = c[:, :, :frames].reshape(len(c), N_MFCC, SEGMENTS, -1).mean(-1).flatten(1)
    change = (c[:, :, 1:] - c[:, :, :-1]).abs().mean(-1)
    return torch.cat([segments, c.std(-1), change], dim=1)


@dataclass(frozen=True)
class CepstralClassifier:
    """Standardisation (mean, scale [D]) and a multinomial logistic regression (weight [K, D], bias [K])."""

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor
    heldout_accuracy: float | None = None

    def features(self, clips: Tensor) -> Tensor:
        """Standardised MFCC statistics [N, D] of 8 kHz clips (float32)."""
        return ((summary(clips) - self.mean) / self.scale).float()

    def classify(self, clips: Tensor) -> Tensor:
        """Predicted classes [N] of 8 kHz clips."""
        return (self.features(clips).double() @ self.weight.T + self.bias).argmax(1)

    def accuracy(self, clips: Tensor, labels: Tensor) -> float:
        """The fraction of clips classified as their labels."""
        return float((self.classify(clips) == labels).double().mean())


def train_cepstral(clips: Tensor, labels: Tensor, heldout: tuple[Tensor, Tensor] | None = None
                   ) -> CepstralClassifier:
    """Fit the classifier on 8 kHz clips [N, 1, L] with labels [N] (deterministic: L-BFGS from zero weights);
    with `heldout` (clips, labels) its accuracy there is recorded."""
    from sklearn.linear_model import LogisticRegression

    stats = summary(clips)
    mean, scale = stats.mean(0), stats.std(0).clamp(min=1e-2)  # in dB: a spread under 0.01 is none
    model = LogisticRegression(C=C, max_iter=5000, tol=1e-8)
    model.fit(((stats - mean) / scale).numpy(), labels.numpy())
    weight = torch.zeros(int(labels.max()) + 1, stats.shape[1], dtype=torch.float64)
    bias = torch.full((len(weight),), -np.inf, dtype=torch.float64)  # a class never seen is never predicted
    coef, intercept = torch.from_numpy(model.coef_).double(), torch.from_numpy(model.intercept_).double()
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes: the second class's score
        coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), intercept])
    weight[model.classes_], bias[model.classes_] = coef, intercept
    out = CepstralClassifier(mean, scale, weight, bias)
    if heldout is None:
        return out
    return CepstralClassifier(mean, scale, weight, bias, out.accuracy(*heldout))
