"""Text as token sequences: `text:PATH[@train|@heldout]`, a character or byte vocabulary, random windows.

The split is nanoGPT's for Tiny Shakespeare (shakespeare_char/prepare.py): of a file of N characters,
``@train`` is the first floor(0.9 N) and ``@heldout`` the rest (1,003,854 and 111,540 of its 1,115,394).
Without a suffix the whole file is the training part. The vocabulary is always the training part's, so the
ids of a held-out part agree with those a model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rediffuse.errors import ConfigError

TOKEN_KINDS = ("char", "bytes")
PARTS = ("train", "heldout")
TRAIN_FRACTION = (9, 10)  # floor(9 N / 10) characters for training, as nanoGPT's int(0.9 N)
SPEC_FORM = "text:PATH, text:PATH@train or text:PATH@heldout (a UTF-8 text file)"


@dataclass(frozen=True)
class Vocabulary:
    """Token ids of characters (sorted code points) or of the 256 byte values; id ``size`` is the mask.

    The mask token of masked diffusion is not a character: it has the id ``mask_id == size``, one past the
    last real token, so a network over ``size + 1`` input ids sees it and ``decode`` never produces it
    unless asked to draw it (``mask='_'``).
    """

    kind: str = "char"  # "char" or "bytes"
    chars: str = ""  # the characters in code-point order ("" for bytes)

    def __post_init__(self) -> None:
        if self.kind not in TOKEN_KINDS:
            raise ValueError(f"unknown token kind {self.kind!r}; use 'char' or 'bytes'")
        if self.kind == "bytes" and self.chars:
            raise ValueError("a bytes vocabulary has no character list; pass chars='' (or kind='char')")
        if self.kind == "char":
            if not self.chars:
                raise ValueError("a character vocabulary needs at least one character; the text is empty")
            if list(self.chars) != sorted(set(self.chars)):
                raise ValueError("vocabulary characters must be distinct and sorted by code point; "
                                 "build it with Vocabulary.from_text")

    @classmethod
    def from_text(cls, text: str, kind: str = "char") -> "Vocabulary":
        """The vocabulary of a training text: its distinct characters, or the 256 bytes."""
        if kind == "bytes":
            return cls("bytes")
        return cls(kind, "".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """The number of real tokens (characters or 256 bytes); the mask id is this number."""
        return 256 if self.kind == "bytes" else len(self.chars)

    @property
    def mask_id(self) -> int:
        """The id of the mask token: ``size``, outside the real tokens."""
        return self.size

    @cached_property
    def _codepoints(self) -> np.ndarray:
        """The sorted code points of the characters (uint32)."""
        return np.frombuffer(self.chars.encode("utf-32-le"), dtype="<u4")

    def encode(self, text: str) -> Tensor:
        """Token ids [len] (long) of a text; ValueError naming the first character not in the vocabulary."""
        if self.kind == "bytes":
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            return torch.from_numpy(raw.astype(np.int64))
        points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        table = self._codepoints
        ids = np.searchsorted(table, points)
        unseen = table[np.minimum(ids, len(table) - 1)] != points
        if unseen.any():
            char = chr(int(points[int(np.argmax(unseen))]))
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) is not in the vocabulary of {self.size} "
                             "characters of the training text; remove it from the input, or train with a "
                             "text that holds it (or with tokens='bytes')")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: Tensor, mask: str | None = None) -> str:
        """The text of token ids [len]; mask ids become the one character ``mask`` (ValueError if None).

        Bytes are decoded as UTF-8 with U+FFFD for invalid sequences (a sample may cut a character).
        """
        ids = torch.as_tensor(ids).detach().to("cpu", torch.int64)
        if ids.ndim != 1:
            raise ValueError(f"decode takes one sequence of ids [len], got shape {tuple(ids.shape)}; "
                             "decode each row")
        if mask is not None and len(mask) != 1:
            raise ValueError(f"mask must be one character, got {mask!r}")
        values = ids.numpy()
        if len(values) and (values.min() < 0 or values.max() > self.size):
            bad = int(values[(values < 0) | (values > self.size)][0])
            raise ValueError(f"token id {bad} is outside this vocabulary (ids 0..{self.size - 1}, mask "
                             f"{self.mask_id})")
        masked = values == self.mask_id
        if masked.any() and mask is None:
            raise ValueError(f"the ids hold the mask token ({self.mask_id}); pass mask='_' (or another "
                             "character) to draw masks")
        if self.kind == "bytes":
            if not masked.any():
                return values.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
            pieces = np.split(values, np.flatnonzero(masked))  # every piece after the first starts at a mask
            text = pieces[0].astype(np.uint8).tobytes().decode("utf-8", errors="replace")
            for piece in pieces[1:]:
                text += mask + piece[1:].astype(np.uint8).tobytes().decode("utf-8", errors="replace")
            return text
        table = np.append(self._codepoints, np.uint32(ord(mask) if mask is not None else 0))
        return table[values].astype("<u4").tobytes().decode("utf-32-le")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (saved with a run)."""
        return {"kind": self.kind, "chars": self.chars, "size": self.size, "mask_id": self.mask_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vocabulary":
        """The vocabulary of ``to_dict()`` output; ValueError if it is inconsistent."""
        vocab = cls(str(data.get("kind", "char")), str(data.get("chars", "")))
        for key in ("size", "mask_id"):
            if key in data and int(data[key]) != getattr(vocab, key):
                raise ValueError(f"vocabulary {key} {data[key]} does not match its {vocab.size} tokens; "
                                 "the saved vocabulary is damaged")
        return vocab


@dataclass
class TextSet:
    """A text part as token ids [N] (long) with its vocabulary, its spec and its length in characters."""

    tokens: Tensor
    vocab: Vocabulary
    spec: str
    num_chars: int  # characters of the part (= len(tokens) for char tokens; bits/char divides by this)


def parse_text_spec(spec: str) -> tuple[Path, str | None]:
    """(path, part) of ``text:PATH[@train|@heldout]``; part None for the whole file."""
    if not spec.startswith("text:") or len(spec) == len("text:"):
        raise ConfigError(f"text data spec {spec!r} is not of the form {SPEC_FORM}")
    body, part = spec[len("text:"):], None
    for name in PARTS:
        if body.endswith("@" + name):
            body, part = body[: -len(name) - 1], name
            break
    return Path(body), part


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a file; one-line errors for a missing file, a directory, bad bytes or no text."""
    if path.is_dir():
        raise ConfigError(f"text data {str(path)!r} is a directory; give a UTF-8 text file as text:PATH")
    if not path.is_file():
        raise ConfigError(f"text file {str(path)!r} does not exist; check the path in text:PATH")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"text file {str(path)!r} is not UTF-8: byte 0x{raw[err.start]:02x} at offset "
                         f"{err.start} ({err.reason}); convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text:
        raise ValueError(f"text file {str(path)!r} is empty; give a file that holds text")
    return text


def split_point(num_chars: int) -> int:
    """The number of training characters of a text of ``num_chars``: floor(0.9 num_chars)."""
    return num_chars * TRAIN_FRACTION[0] // TRAIN_FRACTION[1]


def load_text(spec: str, tokens: str | None = None, vocab: Vocabulary | None = None) -> TextSet:
    """Load ``text:PATH[@train|@heldout]`` as token ids with the training part's vocabulary.

    ``tokens`` is 'char' (the default) or 'bytes' (UTF-8 of the same characters); a given ``vocab`` (a run's)
    is used instead of building one and decides the kind.
    """
    if vocab is not None and tokens is not None and tokens != vocab.kind:
        raise ValueError(f"tokens={tokens!r} contradicts the given {vocab.kind!r} vocabulary; omit tokens")
    kind = vocab.kind if vocab is not None else (tokens or "char")
    if kind not in TOKEN_KINDS:
        raise ValueError(f"unknown tokens {kind!r}; use 'char' or 'bytes'")
    path, part = parse_text_spec(spec)
    text = read_text_file(path)
    cut = split_point(len(text)) if part is not None else len(text)
    train = text[:cut]
    chosen = text[cut:] if part == "heldout" else train
    if not chosen:
        raise ValueError(f"text {spec!r} is empty: the file holds {len(text)} characters and @{part} gets "
                         f"{'the first' if part == 'train' else 'the last'} {len(chosen)}; use a longer "
                         "file or text:PATH without a suffix")
    if vocab is None:
        if not train:
            raise ValueError(f"text {spec!r} has an empty training part ({len(text)} characters) to build the "
                             "vocabulary from; use a longer file")
        vocab = Vocabulary.from_text(train, kind)
    return TextSet(vocab.encode(chosen), vocab, spec, len(chosen))


def random_windows(tokens: Tensor, block: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` windows [batch, block] of ``tokens`` [N] at uniform random offsets in 0..N - block.

    The offsets are the only randomness and come from ``generator`` alone, so a resumed run that restores
    the generator draws the same windows.
    """
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be one sequence [N], got shape {tuple(tokens.shape)}")
    if block < 1 or batch < 1:
        raise ValueError(f"block and batch must be >= 1, got block={block}, batch={batch}")
    if len(tokens) < block:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than the block length {block}; use a "
                         "shorter block or a longer text")
    offsets = torch.randint(0, len(tokens) - block + 1, (batch,), generator=generator, device=generator.device)
    index = offsets.to(tokens.device)[:, None] + torch.arange(block, device=tokens.device)
    return tokens[index]
