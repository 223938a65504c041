"""The training set of a config in memory (`Data`), loaded or drawn from what `config.data` names.

Points and images are examples x [N, ...]; text is one token stream x [N] (long) with its vocabulary, from
which the training loop cuts windows (`rediffuse.data.text.random_windows`).
"""

from __future__ import annotations

import tokenize
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from rediffuse.audio.codec import MelCodec
from rediffuse.audio.levels import geometric_levels
from rediffuse.data import toy2d
from rediffuse.data.audio import is_audio_spec, load_audio
from rediffuse.data.images import load_images
from rediffuse.data.table_codec import TableCodec
from rediffuse.data.tables import is_table_spec, load_table
from rediffuse.data.text import TextSet, Vocabulary, load_text
from rediffuse.errors import ConfigError


@dataclass(frozen=True)
class Stream:
    """A Dataset read example by example: its length, example shape, value std and content digest (one pass)."""

    items: Any  # a torch.utils.data.Dataset yielding tensors or (tensor, label)
    length: int
    shape: tuple[int, ...]
    std: float
    digest: str  # sha256 of every example's float32 values and label, in order (its identity for resume)

    def batch(self, indices: list[int]) -> Tensor:
        """The examples at indices, stacked as float32."""
        return torch.stack([example_tensor(self.items[i]).float() for i in indices])


def example_tensor(item: Any) -> Tensor:
    """The tensor of a Dataset item (a tensor, or the first entry of a (tensor, label) pair)."""
    return torch.as_tensor(item[0] if isinstance(item, (tuple, list)) else item)


class DataOptions(Protocol):
    """The run settings that loading data reads (a `TrainConfig` has them all)."""

    data: str
    num_points: int
    image_size: int | None
    max_image_side: int
    clip_length: int
    sample_rate: int
    audio_representation: str
    tokens: str
    seed: int
    columns: str | None
    target: str | None
    conditional: bool


@dataclass
class Data:
    """A training set in memory: x [N, ...] (float32; text: token ids [N]), optional labels [N], and its kind."""

    x: Tensor
    labels: Tensor | None
    kind: str  # "points", "images", "audio" or "text"
    text: TextSet | None = None  # text: the part's token stream, vocabulary and length in characters
    rate: int | None = None  # audio: the sample rate in Hz
    codec: dict | None = None  # audio learned as log-mel images: the codec's config (x holds the images)
    stream: "Stream | None" = None  # examples read from a Dataset batch by batch (x is then empty)
    table: TableCodec | None = None  # tables: the schema and transforms x was encoded by

    @property
    def vocab(self) -> Vocabulary | None:
        """The vocabulary of text data (None for points and images)."""
        return None if self.text is None else self.text.vocab

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return self.stream.shape if self.stream is not None else tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.stream.length if self.stream is not None else len(self.x)

    def std(self) -> float:
        """The standard deviation of all values (float64 arithmetic; a stream's from its one pass)."""
        return self.stream.std if self.stream is not None else data_std(self.x)

    @property
    def num_classes(self) -> int | None:
        """The number of classes (largest label + 1), or None without labels."""
        return None if self.labels is None else int(self.labels.max()) + 1


def data_kind(spec: str) -> str:
    """'text' for text:PATH, 'table' for table:..., 'audio' for audio:PATH and fsdd:PATH, 'points' for analytic
    presets and point files, else 'images' (ConfigError for a missing data file)."""
    if spec.startswith("text:"):
        return "text"
    if is_table_spec(spec):
        return "table"
    if is_audio_spec(spec):
        return "audio"
    if Path(spec).suffix.lower() in (".npy", ".npz", ".csv") and not Path(spec).is_file():
        raise ConfigError(f"data file {spec!r} does not exist; check the --data path")
    return "points" if toy2d.is_preset(spec) or toy2d.is_point_file(spec) else "images"


# What the loaders raise for unreadable files: numpy raises EOFError for empty files and TokenError for some
# damaged .npy headers, zipfile BadZipFile for damaged .npz files.
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, tokenize.TokenError, KeyError, IndexError)
_DATA_HINT = ("give a .npy/.csv of points [N, d], images (digits, mnist:PATH, folder:PATH, a .npz file) or audio "
              "(audio:PATH, fsdd:PATH)")


def build_data(config: DataOptions) -> Data:
    """Load or draw the training set named by config.data; ValueError naming the data if it is unusable."""
    try:
        data = _load_data(config)
    except ConfigError:
        raise
    except _LOAD_ERRORS as err:
        raise ValueError(_data_error(config.data, err)) from err
    if len(data.x) == 0:
        raise ValueError(f"data {config.data!r} holds no examples; {_DATA_HINT}")
    if not torch.isfinite(data.x).all():
        raise ValueError(f"data {config.data!r} holds NaN or infinite values; remove or fix those entries")
    return data


def _data_error(spec: str, err: BaseException) -> str:
    """A one-line message for a loader's exception, naming the data unless the message already does."""
    detail = " ".join(str(err).split())
    path = spec.partition(":")[2] if ":" in spec and not Path(spec).exists() else spec
    path = path.rpartition("@")[0] if path.endswith(("@train", "@heldout")) else path
    if isinstance(err, ValueError) and not isinstance(err, UnicodeDecodeError) and path in detail:
        return detail
    return f"cannot read data {spec!r} ({type(err).__name__}: {detail or 'no details'}); {_DATA_HINT}"


def _load_data(config: DataOptions) -> Data:
    """The training set named by config.data, as its kind's loader returns it."""
    return LOADERS[data_kind(config.data)](config)


def _load_text(config: DataOptions) -> Data:
    """text:PATH as one token stream."""
    text = load_text(config.data, config.tokens)
    return Data(text.tokens, None, "text", text)


def _load_audio(config: DataOptions) -> Data:
    """Clips as waveforms, or as log-mel (or log linear-frequency) images for audio_representation 'mel'
    ('linear')."""
    audio = load_audio(config.data, length=config.clip_length, rate=config.sample_rate)
    if config.audio_representation == "waveform":
        return Data(audio.x, audio.labels, "audio", rate=audio.rate)
    codec = MelCodec(rate=audio.rate, length=config.clip_length, frequency=config.audio_representation)
    codec, images = codec.centred(torch.cat([codec.encode(part) for part in audio.x.split(256)]))
    rms, peak = geometric_levels(audio.x)  # the level `rediffuse.train.level` calibrates the run's samples to
    codec = replace(codec, reference=(round(rms, 6), round(peak, 6)))
    return Data(images, audio.labels, "audio", rate=audio.rate, codec=codec.config())


def _load_points(config: DataOptions) -> Data:
    """A 2-D set drawn with the run's seed, or a point file."""
    generator = torch.Generator().manual_seed(config.seed)
    return Data(toy2d.points_dataset(config.data, config.num_points, generator), None, "points")


def _load_images(config: DataOptions) -> Data:
    """digits, mnist:PATH, folder:PATH or an array file of images."""
    base = config.data.rpartition("@")[0] if config.data.endswith(("@train", "@heldout")) else config.data
    if ":" not in base and base != "digits" and not Path(base).exists():
        raise ConfigError(f"unknown data {config.data!r}; use a points set ({', '.join(toy2d.TOY2D)}, ...), "
                          "a .npy/.csv of points, or images (digits, mnist:PATH, folder:PATH, a .npz file)")
    images = load_images(config.data, size=config.image_size, max_side=config.max_image_side)
    return Data(images.images.float().contiguous(), images.labels, "images")


def _load_table(config: DataOptions) -> Data:
    """table:... as rows encoded by a codec fitted to them (the target as labels for a conditional run)."""
    table = load_table(config.data, config.columns, config.target)
    try:
        codec = TableCodec.fit(table, conditional=config.conditional)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    x, labels = codec.encode(table)
    return Data(x, labels, "table", table=codec)


LOADERS: dict[str, Callable[[DataOptions], Data]] = {"text": _load_text, "audio": _load_audio,
                                                      "points": _load_points, "images": _load_images,
                                                      "table": _load_table}


def data_std(x: Tensor) -> float:
    """The standard deviation of all values of a data set (float64 arithmetic)."""
    return float(x.double().std())
