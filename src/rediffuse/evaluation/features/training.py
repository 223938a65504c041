"""Deterministic training of the digit classifiers: sklearn digits, the MNIST test split, spoken digits (FSDD)."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rediffuse.data.audio import fsdd_fields, load_fsdd
from rediffuse.data.images import load_digits, load_images, load_mnist_idx
from rediffuse.audio.spectral import log_mel_image
from rediffuse.threads import cpu_threads
from rediffuse.evaluation.features.classifier import CONFIGS, ClassifierConfig, DigitClassifier, accuracy

# labelled: any run's own labelled images (`eval --features classifier`)
KINDS = ("digits", "mnist", "fsdd", "labelled")
# Held-out accuracy a trained classifier must reach before its features are trusted for metrics.
REQUIRED_ACCURACY = {"digits": 0.97, "mnist": 0.98, "fsdd": 0.95, "labelled": 0.0}
FSDD_RATE = 8000  # the spoken-digit classifier hears 8 kHz clips
SPLIT_RULES = {
    "digits": "sklearn digits: held out = index % 5 == 0 (360 images), train = the rest (1437): digits@heldout/@train",
    "mnist": "MNIST IDX (a folder's t10k split): train = index % 5 != 0, held out = index % 5 == 0",
    "labelled": "a run's labelled images (its data spec without @train/@heldout): held out = index % 5 == 0",
    "fsdd": "FSDD recordings as 32x32 log-mel images of their centre 8192 samples at 8 kHz: train = index >= 5, "
            "held out = index 0-4",
}


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings: epochs, batch size, AdamW lr and weight decay, affine augmentation, smoothing."""

    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    max_shift: float = 1.0
    max_rotation: float = 0.0
    max_scale: float = 0.0
    label_smoothing: float = 0.05
    warmup_fraction: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the settings."""
        return asdict(self)


SETTINGS: dict[str, TrainSettings] = {
    "digits": TrainSettings(epochs=50, batch_size=64, max_shift=1.0, max_rotation=10.0, max_scale=0.1),
    "mnist": TrainSettings(epochs=6, batch_size=128, max_shift=2.0, max_rotation=10.0, max_scale=0.1),
    "fsdd": TrainSettings(epochs=30, batch_size=64, max_shift=2.0, max_rotation=0.0, max_scale=0.1),
    "labelled": TrainSettings(epochs=20, batch_size=64, max_shift=1.0, max_rotation=5.0, max_scale=0.05),
}
LABELLED_STEPS = 6000  # a labelled set's classifier trains about this many steps (20 to 100 epochs)


class DigitSplit(NamedTuple):
    """Train and held-out images [N, 1, S, S] in [-1, 1] with labels, and a fingerprint of the data."""

    train_x: Tensor
    train_y: Tensor
    heldout_x: Tensor
    heldout_y: Tensor
    fingerprint: str


def data_fingerprint(kind: str, images: Tensor, labels: Tensor) -> str:
    """sha256 (hex) of the kind, split rule, image shape and the float32 image and int64 label bytes."""
    h = hashlib.sha256()
    h.update(f"{kind}|{SPLIT_RULES[kind]}|{tuple(images.shape)}|".encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_kind(kind: str) -> str:
    """Return kind if it names a known classifier, else raise."""
    if kind not in KINDS:
        raise ValueError(f"classifier kind must be one of {KINDS}, got {kind!r}")
    return kind


def load_split(kind: str, data_path: str | Path | None = None, image_size: int | None = None) -> DigitSplit:
    """The train / held-out split of a kind's data (see SPLIT_RULES) with its fingerprint; for 'labelled' the
    data path is a run's image data spec, resized to image_size when given."""
    check_kind(kind)
    if kind == "labelled":
        spec = str(data_path).rpartition("@")[0] if str(data_path).endswith(("@train", "@heldout")) else data_path
        data = load_images(str(spec), size=image_size)
        if data.labels is None:
            raise ValueError(f"data {spec!r} has no labels, so no classifier can be trained on it; give labelled "
                             "images (class sub-folders, an .npz with labels) or --features inception:PATH")
        images, labels = data.images.float(), data.labels
        held = torch.arange(len(images)) % 5 == 0
    elif kind == "digits":
        if data_path is not None:
            raise ValueError("the 'digits' classifier uses scikit-learn's bundled digits; data_path must be None")
        images, labels = load_digits()
        held = torch.arange(len(images)) % 5 == 0  # the project-wide rule, as `digits@heldout`
    elif kind == "fsdd":
        if data_path is None:
            raise ValueError("the 'fsdd' classifier needs data_path: the Free Spoken Digit Dataset's recordings "
                             "folder ({digit}_{speaker}_{index}.wav)")
        audio = load_fsdd(data_path, on_error="raise")
        images, labels = log_mel_image(audio.x, FSDD_RATE), audio.labels
        held = torch.tensor([fsdd_fields(name)[2] < 5 for name in audio.files])
    else:
        if data_path is None:
            raise ValueError("the 'mnist' classifier needs data_path: a folder with the MNIST IDX files "
                             "(t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]) or the images file")
        images, labels = load_mnist_idx(data_path, split="test")  # a folder's t10k files; a file as given
        if labels is None:
            raise ValueError(f"{data_path}: no MNIST labels file next to the images; the classifier needs labels")
        held = torch.arange(len(images)) % 5 == 0
    return DigitSplit(images[~held].contiguous(), labels[~held].contiguous(),
                      images[held].contiguous(), labels[held].contiguous(),
                      data_fingerprint(kind, images, labels))


def random_affine(
    x: Tensor, generator: torch.Generator, max_shift: float = 1.0, max_rotation: float = 0.0,
    max_scale: float = 0.0, fill: float = -1.0,
) -> Tensor:
    """Warp each image of x [B, C, H, W] by a random shift (pixels), rotation (degrees) and scale, bilinearly.

    Each parameter is uniform in [-max, max] (scale factor 1 + u * max_scale); pixels from outside the
    image take the value `fill` (the background, -1 for digits).
    """
    if max_shift <= 0 and max_rotation <= 0 and max_scale <= 0:
        return x
    b, _, h, w = x.shape
    u = (torch.rand(4, b, generator=generator, dtype=torch.float64) * 2 - 1).to(x.device, x.dtype)
    angle = u[0] * math.radians(max_rotation)
    scale = 1 + u[1] * max_scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output coordinates in [-1, 1] to input coordinates: rotate/scale, then shift.
    theta = torch.stack([
        torch.stack([cos, -sin, u[2] * 2 * max_shift / w], dim=1),
        torch.stack([sin, cos, u[3] * 2 * max_shift / h], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (restoring the global RNG and the deterministic-algorithms flag afterwards)."""
    flag = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fork = (torch.random.fork_rng(devices=[]) if device.type == "cpu"
            else torch.random.fork_rng(devices=[device.index or 0], device_type=device.type))
    with fork:
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(flag, warn_only=warn_only)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train_classifier(
    kind: str,
    data_path: str | Path | None = None,
    seed: int = 0,
    *,
    settings: TrainSettings | None = None,
    config: ClassifierConfig | None = None,
    device: str | torch.device = "cpu",
    split: DigitSplit | None = None,
    num_threads: int | None = 1,
    verbose: bool = False,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train a DigitClassifier for `kind` ('digits' | 'mnist'); return (model in eval mode, metrics).

    Deterministic given the seed, device and thread count: seeded init, a seeded CPU generator for the data
    order and the augmentation, fixed epochs, AdamW with warm-up + cosine lr. On the CPU it trains with
    `num_threads` threads (1 by default: the same weights on any machine, and the small network gains
    little from more, least of all on shared cores; None keeps torch's setting). The split is
    SPLIT_RULES[kind]; metrics hold the held-out accuracy, the data fingerprint and the settings.
    """
    check_kind(kind)
    device = torch.device(device)
    settings = settings or SETTINGS[kind]
    config = config or CONFIGS[kind]
    split = split or load_split(kind, data_path)
    start = time.perf_counter()
    with deterministic(seed, device), cpu_threads(num_threads if device.type == "cpu" else None):
        model = DigitClassifier(config).to(device)
        gen = torch.Generator().manual_seed(seed)
        x, y = split.train_x.to(device), split.train_y.to(device)
        steps_per_epoch = math.ceil(len(x) / settings.batch_size)
        total = settings.epochs * steps_per_epoch
        warmup = max(1, round(settings.warmup_fraction * total))
        opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, warmup))
        model.train()
        loss_sum = torch.zeros((), device=device)
        for epoch in range(settings.epochs):
            order = torch.randperm(len(x), generator=gen).to(device)
            loss_sum.zero_()
            for i in range(0, len(x), settings.batch_size):
                idx = order[i:i + settings.batch_size]
                xb = random_affine(x[idx], gen, settings.max_shift, settings.max_rotation, settings.max_scale)
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=settings.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach()
            if verbose:
                print(f"[{kind}] epoch {epoch + 1}/{settings.epochs} loss {loss_sum.item() / steps_per_epoch:.4f}")
        model.eval()
    seconds = time.perf_counter() - start
    metrics = {
        "kind": kind,
        "seed": seed,
        "heldout_accuracy": accuracy(model, split.heldout_x, split.heldout_y),
        "train_accuracy": accuracy(model, split.train_x, split.train_y),
        "n_train": len(split.train_x),
        "n_heldout": len(split.heldout_x),
        "split": SPLIT_RULES[kind],
        "fingerprint": split.fingerprint,
        "train_seconds": seconds,
        "final_loss": loss_sum.item() / steps_per_epoch,
        "settings": settings.to_dict(),
        "device": str(device),
        "torch": torch.__version__,
    }
    return model, metrics


def quick_settings(kind: str, epochs: int) -> TrainSettings:
    """The kind's default settings with fewer epochs (for smoke tests)."""
    return replace(SETTINGS[check_kind(kind)], epochs=epochs)


def labelled_recipe(split: DigitSplit) -> tuple[ClassifierConfig, TrainSettings]:
    """The classifier and settings for a run's own labelled images: its channels, size and classes; wider
    stages for larger images; epochs for about LABELLED_STEPS steps."""
    c, h, w = split.train_x.shape[1:]
    channels = (32, 64, 128) if min(h, w) < 16 else (16, 32, 64, 128)
    config = ClassifierConfig(image_size=h, image_width=None if w == h else w, in_channels=c, channels=channels,
                              num_classes=int(max(split.train_y.max(), split.heldout_y.max())) + 1)
    batches = max(1, math.ceil(len(split.train_x) / SETTINGS["labelled"].batch_size))
    return config, replace(SETTINGS["labelled"], epochs=min(100, max(20, LABELLED_STEPS // batches)))
