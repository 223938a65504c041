"""`rediffuse sample` for audio runs: one 16-bit PCM WAV per sample, an .npz of the waveforms, and pictures.

`--out DIR` (no suffix; default RUN/samples) writes DIR/sample-0000[-class3].wav, ..., DIR/samples.npz
(float waveforms [N, 1, L] and labels), DIR/samples.png (waveform and spectrogram of the first four) and
DIR/spectrograms.png (all of them, one row per class). `--out x.wav` writes x.wav for one sample, or
x-0000.wav, ... beside it for several, with x.npz, x.png and x_spectrograms.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from rediffuse import distributed, schedules, viz_audio
from rediffuse.data.audio import write_wav
from rediffuse.drawing import as_delivered
from rediffuse.errors import UsageError
from rediffuse.cli.outputs import audio_extras, wav_paths
from rediffuse.io import atomic_write_arrays
from rediffuse.samplers.generation import require_finite


def check_audio_out(out: Path) -> None:
    """UsageError unless out is a folder (no suffix) or a .wav path."""
    if out.suffix and out.suffix.lower() != ".wav":
        raise UsageError(f"--out for an audio run must be a folder or end in .wav, got {str(out)!r}")
    if out.suffix == "" and out.is_file():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder (or a path ending in .wav)")


def sample_audio(denoiser: Any, schedule: schedules.Schedule, data_info: dict[str, Any], out: Path,
                 options: dict[str, Any]) -> list[Path]:
    """Sample an audio run (`data_info`: its spec's data): the WAVs, the .npz and the two pictures; the paths
    written (rank 0 only)."""
    shape, rate = data_info["shape"], int(data_info["rate"])
    x = require_finite(distributed.generate(denoiser, schedule, shape, **options).cpu())
    x = as_delivered(data_info, x)
    if not distributed.current().is_main:
        return []  # under torchrun rank 0 writes the files
    cond = options["cond"]
    if out.suffix.lower() != ".wav":
        out.mkdir(parents=True, exist_ok=True)
    npz, picture, grid = audio_extras(out)
    wavs = [write_wav(path, clip[0], rate) for path, clip in zip(wav_paths(out, len(x), cond), x)]
    arrays = {"samples": x.numpy(), "rate": rate, **({} if cond is None else {"labels": cond.numpy()})}
    atomic_write_arrays(npz, **arrays)
    viz_audio.waveforms_png(picture, x, rate, cond)
    viz_audio.spectrogram_grid_png(grid, x, cond, nrow=None if cond is not None else 8)
    return [*wavs, npz, picture, grid]
