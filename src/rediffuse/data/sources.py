"""Training data given as Python objects (`rediffuse.fit`): tensors, (tensor, labels) pairs, Datasets, DataLoaders.

A tensor [N, ...] is held in memory like a loaded file: [N, d] points, [N, C, L] clips, [N, C, H, W] images.
A Dataset (or a DataLoader's dataset) streams: it is read once, an example at a time, for its length, labels,
example shape and value std, and then batch by batch during training, so nothing needs the whole set in memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from rediffuse.data.dataset import Data, Stream, example_tensor
from rediffuse.errors import ConfigError

KINDS = {1: "points", 2: "audio", 3: "images"}  # by the number of axes of one example


def describe(read: Data) -> str:
    """A stable name for in-memory data made by `from_python` (what a run's config records as its data, and
    resume checks): a hash of its values and labels."""
    if read.stream is not None:
        items = read.stream
        return f"dataset:{type(items.items).__name__}:{items.length}:{items.digest[:16]}"
    digest = hashlib.sha256(read.x.numpy().tobytes())
    if read.labels is not None:
        digest.update(read.labels.numpy().tobytes())
    return f"tensor:{list(read.x.shape)}:{digest.hexdigest()[:16]}"


def from_python(data: Any, labels: Tensor | None = None, rate: int = 8000) -> Data:
    """The training set of a tensor, a (tensor, labels) pair, a Dataset or a DataLoader (ConfigError for others)."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        data, labels = data
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    if isinstance(data, Tensor):
        return _from_tensor(data, labels, rate)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return _from_dataset(data, rate)
    raise ConfigError(f"cannot train on a {type(data).__name__}; give a tensor [N, ...], a (tensor, labels) pair, "
                      "a torch Dataset with __len__ (yielding tensors or (tensor, label)), a DataLoader, or a data "
                      "spec string such as 'digits'")


def _kind(shape: tuple[int, ...]) -> str:
    """points, audio or images by the axes of one example (ConfigError for others)."""
    if len(shape) not in KINDS:
        raise ConfigError(f"examples of shape {list(shape)} are neither points [d], clips [C, L] nor images "
                          "[C, H, W]; reshape them to one of those")
    return KINDS[len(shape)]


def _rate(kind: str, rate: int) -> int | None:
    """The sample rate data of a kind carries (clips only)."""
    return {"audio": rate}.get(kind)


def _labels(labels: Any, n: int) -> Tensor | None:
    """Labels as a long tensor [n] of non-negative classes (ConfigError naming the problem)."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.dtype.is_floating_point or (n and int(labels.min()) < 0):
        raise ConfigError(f"labels must be {n} non-negative integers (one class per example), got shape "
                          f"{list(labels.shape)} of {labels.dtype}; give integer class ids 0..K-1")
    return labels.long()


def _from_tensor(x: Tensor, labels: Any, rate: int) -> Data:
    """In-memory data of a tensor [N, ...] and optional labels [N]."""
    if x.ndim < 2 or len(x) == 0:
        raise ConfigError(f"a training tensor needs a leading example axis and at least one example, got shape "
                          f"{list(x.shape)}; give [N, d] points, [N, C, L] clips or [N, C, H, W] images")
    kind = _kind(tuple(x.shape[1:]))
    if not torch.isfinite(x).all():
        raise ConfigError("the training tensor holds NaN or infinite values; fix or drop those examples")
    return Data(x.detach().float().contiguous(), _labels(labels, len(x)), kind,
                rate=_rate(kind, rate))


def _from_dataset(items: Any, rate: int) -> Data:
    """A streamed Dataset, read once for its labels, shape and value moments."""
    n = len(items)
    if n == 0:
        raise ConfigError("the Dataset is empty; give one with at least one example")
    shape, labels, total, squares, count = None, [], 0.0, 0.0, 0
    digest = hashlib.sha256()
    for i in range(n):
        item = items[i]
        x = example_tensor(item).double()
        digest.update(x.float().contiguous().numpy().tobytes())
        if shape is None:
            shape = tuple(x.shape)
        elif tuple(x.shape) != shape:
            raise ConfigError(f"Dataset item {i} has shape {list(x.shape)} but item 0 has {list(shape)}; every "
                              "example must have one shape: resize, crop or pad them")
        if not torch.isfinite(x).all():
            raise ConfigError(f"Dataset item {i} holds NaN or infinite values; fix or drop it")
        if isinstance(item, (tuple, list)) and len(item) > 1:
            labels.append(int(item[1]))
            digest.update(labels[-1].to_bytes(8, "little", signed=True))
        total, squares, count = total + float(x.sum()), squares + float(x.square().sum()), count + x.numel()
    if labels and len(labels) != n:
        raise ConfigError("some Dataset items carry a label and some do not; yield (tensor, label) for all or none")
    mean = total / count
    std = max(squares / count - mean * mean, 0.0) ** 0.5 * (count / max(count - 1, 1)) ** 0.5
    kind = _kind(shape)
    return Data(torch.empty(0), _labels(labels, n) if labels else None, kind,
                rate=_rate(kind, rate), stream=Stream(items, n, shape, std, digest.hexdigest()))
