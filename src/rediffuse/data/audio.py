"""Audio data sets as float32 waveforms [N, 1, L] in [-1, 1]: WAV folders (`audio:PATH`) and FSDD (`fsdd:PATH`).

Every clip is read with soundfile, which scales each PCM width (8-bit unsigned, 16, 24 and 32-bit) to
[-1, 1) by its own full scale, so no width is mis-scaled; float WAVs must already lie in [-1, 1]. Several
channels are mixed down to their mean (or refused, `mixdown=False`). A clip at another sample rate is
resampled with scipy's polyphase filter (`scipy.signal.resample_poly`, Kaiser window, up/down reduced by
their gcd) or refused (`resample=False`). Clips are then centre-cropped or centre-zero-padded to `length`.
Unreadable or empty files are skipped with one warning (`on_error='skip'`) or raise (`on_error='raise'`).

Splits: `fsdd:PATH@train` holds the recordings `{digit}_{speaker}_{index}.wav` with index >= 5 and `@heldout`
those with index 0-4 (FSDD's own test split); `audio:PATH@train` / `@heldout` is the project-wide rule over
the sorted files (held out: file number % 5 == 0).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rediffuse.data.folders import class_labels, files_under
from rediffuse.io import atomic_write

AUDIO_SUFFIXES = (".wav", ".flac")
RATE, LENGTH = 8000, 8192  # the defaults: 8 kHz, 1.024 s
PARTS = ("train", "heldout")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")
SPEC_FORMS = ("'audio:PATH' (a folder of WAV files; classes from sub-folder names)",
              "'fsdd:PATH' (the Free Spoken Digit Dataset's recordings folder)",
              "either + '@train' or '@heldout'")


class AudioSet(NamedTuple):
    """Clips [N, 1, L] in [-1, 1] at `rate` Hz, optional long labels [N], class names and the source files."""

    x: Tensor
    labels: Tensor | None
    class_names: list[str] | None
    files: list[str]
    rate: int


def read_wav(path: str | Path, rate: int = RATE, *, resample: bool = True, mixdown: bool = True) -> np.ndarray:
    """One file as float32 samples [n] in [-1, 1] at `rate` Hz; ValueError naming the file if it is unusable."""
    import soundfile as sf

    path = Path(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, TypeError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"cannot read audio file {path}: {' '.join(str(err).split())}") from err
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty (no samples)")
    if not np.isfinite(data).all() or np.abs(data).max() > 1.0:
        raise ValueError(f"audio file {path} holds float samples outside [-1, 1]; normalise it to [-1, 1]")
    if data.shape[1] > 1:
        if not mixdown:
            raise ValueError(f"audio file {path} has {data.shape[1]} channels; give mono files (or allow mixdown)")
        data = data.mean(axis=1, keepdims=True)
    x = data[:, 0]
    if file_rate != rate:
        if not resample:
            raise ValueError(f"audio file {path} is at {file_rate} Hz, not {rate} Hz; resample it to {rate} Hz "
                             "(or allow resampling)")
        x = resample_to(x, file_rate, rate)
    return np.ascontiguousarray(x, dtype=np.float32)


def resample_to(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """x [n] from rate_in to rate_out Hz by scipy's polyphase resampler (float32, clipped to [-1, 1])."""
    from scipy.signal import resample_poly

    g = math.gcd(int(rate_in), int(rate_out))
    y = resample_poly(x.astype(np.float64), int(rate_out) // g, int(rate_in) // g)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """x [n] centre-cropped (n > length) or zero-padded equally on both sides (n < length) to [length]."""
    if length < 1:
        raise ValueError(f"the clip length must be >= 1 sample, got {length}")
    n = len(x)
    if n >= length:
        start = (n - length) // 2
        return x[start: start + length]
    out = np.zeros(length, dtype=np.float32)
    start = (length - n) // 2
    out[start: start + n] = x
    return out


def wav_bytes(x: Tensor | np.ndarray, rate: int) -> bytes:
    """A waveform [n] (values clipped to [-1, 1]) as the bytes of a 16-bit PCM mono WAV file."""
    import soundfile as sf

    samples = np.clip(np.asarray(torch.as_tensor(x).detach().cpu().double().reshape(-1)), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, samples, int(rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav(path: str | Path, x: Tensor | np.ndarray, rate: int) -> Path:
    """Write a waveform [n] as a 16-bit PCM mono WAV, atomically."""
    return atomic_write(path, wav_bytes(x, rate))


def fsdd_fields(name: str) -> tuple[int, str, int] | None:
    """(digit, speaker, index) of an FSDD file name '{digit}_{speaker}_{index}.wav', None for other names."""
    m = FSDD_NAME.match(name)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)))


def _audio_files(folder: Path) -> list[Path]:
    """Audio files directly in `folder` (sorted, hidden files skipped)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))


def _read_all(files: list[Path], folder: Path, length: int, rate: int, on_error: str, **options: bool
              ) -> tuple[list[np.ndarray], list[int]]:
    """(fitted clips, positions in `files` that were read); unreadable files skipped with one warning or raised."""
    clips, kept, bad = [], [], []
    for i, file in enumerate(files):
        try:
            clips.append(fit_length(read_wav(file, rate, **options), length))
        except ValueError as err:
            if on_error == "raise":
                raise
            bad.append(f"{file.name} ({err})")
            continue
        kept.append(i)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable audio file(s) in {folder}; first: {bad[0]}", stacklevel=3)
    if not clips:
        raise ValueError(f"no readable audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return clips, kept


def load_fsdd(folder: str | Path, part: str | None = None, *, length: int = LENGTH, rate: int = RATE,
              on_error: str = "skip", **options: bool) -> AudioSet:
    """FSDD recordings of a folder (label = digit); part 'train' (index >= 5), 'heldout' (0-4) or None (all)."""
    folder = _folder(folder)
    named = [(f, fsdd_fields(f.name)) for f in _audio_files(folder)]
    named = [(f, fields) for f, fields in named if fields is not None]
    if not named:
        raise ValueError(f"no FSDD recordings named {{digit}}_{{speaker}}_{{index}}.wav in {folder}; use "
                         "audio:PATH for other WAV folders")
    named.sort(key=lambda item: (item[1][0], item[1][1], item[1][2]))
    if part is not None:
        named = [(f, fields) for f, fields in named if (fields[2] < 5) == (part == "heldout")]
    files = [f for f, _ in named]
    clips, kept = _read_all(files, folder, length, rate, on_error, **options)
    labels = torch.tensor([named[i][1][0] for i in kept], dtype=torch.long)
    return AudioSet(_stack(clips), labels, [str(d) for d in range(10)], [files[i].name for i in kept], rate)


def load_audio_folder(folder: str | Path, part: str | None = None, *, length: int = LENGTH, rate: int = RATE,
                      on_error: str = "skip", **options: bool) -> AudioSet:
    """The audio files of a folder at any depth; classes are its sorted first-level sub-folders when every file is
    in one (else unlabelled); part as in the module doc."""
    folder = _folder(folder)
    files = files_under(folder, AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder} or its sub-folders")
    classes = class_labels(folder, files)
    labels = classes[0] if classes else [0] * len(files)
    if part is not None:
        keep = [i for i in range(len(files)) if (i % 5 == 0) == (part == "heldout")]
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    clips, kept = _read_all(files, folder, length, rate, on_error, **options)
    y = torch.tensor([labels[i] for i in kept], dtype=torch.long) if classes else None
    return AudioSet(_stack(clips), y, classes[1] if classes else None,
                    [str(files[i].relative_to(folder)) for i in kept], rate)


def load_audio(spec: str, *, length: int = LENGTH, rate: int = RATE, on_error: str = "skip",
               **options: bool) -> AudioSet:
    """Load clips by spec (see SPEC_FORMS); ValueError naming the spec's problem."""
    base, at, part = spec.rpartition("@")
    if not at or part not in PARTS:
        base, part = spec, None
    kind, _, path = base.partition(":")
    loaders = {"audio": load_audio_folder, "fsdd": load_fsdd}
    if kind not in loaders or not path:
        raise ValueError(f"unknown audio spec {spec!r}; accepted: " + "; ".join(SPEC_FORMS))
    return loaders[kind](path, part, length=length, rate=rate, on_error=on_error, **options)


def is_audio_spec(spec: str) -> bool:
    """Whether a data spec names audio (audio:PATH or fsdd:PATH, with or without a part)."""
    return spec.startswith(("audio:", "fsdd:"))


def _folder(folder: str | Path) -> Path:
    """folder as a Path; FileNotFoundError if it is not a directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder {folder} does not exist (or is not a folder)")
    return folder


def _stack(clips: list[np.ndarray]) -> Tensor:
    """Equal-length clips as one float32 tensor [N, 1, L]."""
    return torch.from_numpy(np.stack(clips)).unsqueeze(1).contiguous()
