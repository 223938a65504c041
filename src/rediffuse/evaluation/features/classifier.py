"""A small CNN digit classifier whose penultimate layer serves as the feature extractor for sample metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a DigitClassifier: input size, conv widths per stage, feature and class counts."""

    image_size: int
    channels: tuple[int, ...] = (32, 64, 128)
    convs_per_stage: int = 1
    feature_dim: int = 128
    num_classes: int = 10
    in_channels: int = 1
    image_width: int | None = None  # H x W images (default: square)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the config (the defaults of in_channels and image_width left out)."""
        d = {**asdict(self), "channels": list(self.channels)}
        for key, default in (("in_channels", 1), ("image_width", None)):
            if d[key] == default:
                del d[key]
        return d

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the classifier reads."""
        return (self.in_channels, self.image_size, self.image_width or self.image_size)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        """Inverse of to_dict."""
        return cls(**{**d, "channels": tuple(d["channels"])})


CONFIGS: dict[str, ClassifierConfig] = {
    "digits": ClassifierConfig(image_size=8),
    "mnist": ClassifierConfig(image_size=28, channels=(16, 32, 64, 128)),
    # spoken digits: 32 x 32 log-mel images of 8192 samples at 8 kHz (`rediffuse.audio.spectral.log_mel_image`)
    "fsdd": ClassifierConfig(image_size=32, channels=(16, 32, 64, 128)),
}


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU (size-preserving)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class DigitClassifier(nn.Module):
    """Conv stages (2x max-pool between them), global average pool, a ReLU feature layer, then logits.

    Input: 1-channel images [N, 1, S, S] in [-1, 1], S = config.image_size (8 for sklearn digits gives
    8 -> 4 -> 2 with three stages; 28 for MNIST gives 28 -> 14 -> 7 -> 3 with four).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for i, c in enumerate(config.channels):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(config.convs_per_stage):
                layers.append(_conv_block(c_in, c))
                c_in = c
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(c_in, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features [N, feature_dim] (non-negative, after ReLU) of images x [N, 1, S, S]."""
        h = self.body(x).mean(dim=(2, 3))
        return F.relu(self.embed(h))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.features(x))


def check_images(model: DigitClassifier, x: Tensor) -> Tensor:
    """x as [N, C, H, W] (a grey [N, H, W] input gains the channel axis); raises on other shapes."""
    shape = model.config.input_shape
    if x.ndim == 3 and shape[0] == 1:
        x = x[:, None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"classifier expects images [N, {', '.join(map(str, shape))}] in [-1, 1], "
                         f"got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def _batched(model: DigitClassifier, x: Tensor, batch_size: int, fn: str) -> Tensor:
    """Apply model.<fn> to x in eval mode, batch by batch on the model's device; results on the CPU."""
    x = check_images(model, x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        outs = [
            getattr(model, fn)(x[i:i + batch_size].to(param.device, param.dtype)).float().cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    if not outs:
        dim = model.config.feature_dim if fn == "features" else model.config.num_classes
        return torch.empty(0, dim)
    return torch.cat(outs)


def extract_features(model: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """Penultimate features [N, feature_dim] (float32, CPU) of images x [N, 1, S, S] in [-1, 1]."""
    return _batched(model, x, batch_size, "features")


def classify(model: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted labels [N] (long, CPU) of images x [N, 1, S, S] in [-1, 1]."""
    return _batched(model, x, batch_size, "forward").argmax(dim=1)


def probabilities(model: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """Class probabilities [N, num_classes] (float64, CPU) of images x [N, 1, S, S] in [-1, 1]."""
    return _batched(model, x, batch_size, "forward").double().softmax(dim=1)


def accuracy(model: DigitClassifier, x: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of images x whose predicted label equals labels."""
    return (classify(model, x, batch_size) == labels.cpu()).float().mean().item()


def class_histogram(labels: Tensor, num_classes: int = 10) -> Tensor:
    """Fraction of labels in each class [num_classes] (e.g. of classify(model, samples))."""
    return torch.bincount(labels.cpu(), minlength=num_classes).double() / max(len(labels), 1)


__all__ = [
    "CONFIGS",
    "ClassifierConfig",
    "DigitClassifier",
    "accuracy",
    "check_images",
    "class_histogram",
    "classify",
    "extract_features",
    "probabilities",
]
