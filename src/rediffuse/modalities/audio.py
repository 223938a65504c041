"""Audio clips [N, 1, L] (waveforms, or log-mel images decoded by the codec): one 16-bit PCM WAV per sample,
an .npz of the waveforms, and pictures.

`--out DIR` (no suffix; default RUN/samples) writes DIR/sample-0000[-class3].wav, ..., DIR/samples.npz
(float waveforms [N, 1, L], the rate and labels), DIR/samples.png (waveform and spectrogram of the first four)
and DIR/spectrograms.png (all of them, one row per class). `--out x.wav` writes x.wav for one sample, or
x-0000.wav, ... beside it for several, with x.npz, x.png and x_spectrograms.png.
"""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rediffuse.viz import audio as viz_audio
from rediffuse.audio.codec import REPRESENTATIONS, codec_from_config, to_waveforms
from rediffuse.data.audio import write_wav
from rediffuse.keys import need, need_positive_ints, opt
from rediffuse.errors import UsageError
from rediffuse.io import atomic_write_arrays
from rediffuse.modalities.base import Drawn, Extras, labels_in_files, refuse_suffix
from rediffuse.modalities.gaussian import GaussianModality


@dataclass
class AudioKeys:
    """The keys of audio data."""

    clip_length: int = opt(8192, "audio data: samples per clip (longer clips are centre-cropped, shorter "
                                 "zero-padded)")
    sample_rate: int = opt(8000, "audio data: the sample rate in Hz (other files are resampled, polyphase)")
    audio_representation: str = opt("waveform", "audio data: what the model learns, waveform (a 1-D UNet), "
                                                "mel (log-mel images for a 2-D UNet, decoded by Griffin-Lim) or "
                                                "linear (log-magnitude images of the STFT bins, twice the rows)")
    level_clips: int = opt(500, "a log-mel audio run: clips drawn after training, with the recommended sampling, "
                                "to fit the waveform gain that brings their geometric-mean RMS and peak to the "
                                "training clips' (0: none)")


class Audio(GaussianModality):
    """Sound clips at one sample rate (audio:PATH, fsdd:PATH)."""

    name = "audio"
    a_run = "an audio run"
    keys = AudioKeys  # the config keys this kind of data reads
    default_n = 30
    eval_metrics = ("fd", "prdc", "acc", "is")
    eval_n = 1000
    preview_per_class = 4

    def check_keys(self, config: Any) -> None:
        """ConfigError naming the first invalid audio key."""
        need(config.audio_representation in REPRESENTATIONS, f"unknown audio_representation "
             f"{config.audio_representation!r}; choose one of {', '.join(REPRESENTATIONS)}")
        need_positive_ints(config, ("clip_length", "sample_rate"))
        need(isinstance(config.level_clips, int) and config.level_clips >= 0,
             f"level_clips must be an integer >= 0, got {config.level_clips!r}")

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """A 1-D UNet over waveforms; a 2-D UNet over log-mel images."""
        return "unet" if codec else "unet1d"

    def default_out(self, run_dir: Path) -> Path:
        """RUN/samples/."""
        return run_dir / "samples"

    def check_out(self, out: Path) -> None:
        """A folder or a .wav path."""
        refuse_suffix(out, ("", ".wav"), "an audio run")
        if out.suffix == "" and out.is_file():
            raise UsageError(f"--out {str(out)!r} is a file; give a folder (or a path ending in .wav)")

    def check_request(self, spec: dict[str, Any], request: Any, trajectory: Path | None) -> None:
        """No text options and no trajectory."""
        super().check_request(spec, request, trajectory)
        if trajectory is not None:
            raise UsageError("--trajectory is for points, image and text runs; drop it for an audio run")

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """The WAVs, the .npz and the two pictures."""
        return [*wav_paths(out, n, labels), *audio_extras(out)]

    def deliver(self, data_info: dict[str, Any], x: Tensor) -> Tensor:
        """Waveforms (log-mel images decoded) clamped to [-1, 1]."""
        return to_waveforms(data_info, x).clamp(-1, 1)

    def delivered_shape(self, data_info: Any) -> tuple[int, ...]:
        """Waveforms [1, L] (a log-mel run draws images of them)."""
        return (1, int(data_info.codec["length"])) if data_info.codec else tuple(data_info.shape)

    def edit_outputs(self, out: Path, n: int) -> list[Path]:
        """The .npz, a WAV per result and the spectrograms before and after."""
        return [*super().edit_outputs(out, n), *[out / f"edit-{i:04d}.wav" for i in range(n)],
                out / "spectrograms.png"]

    def write_edits(self, out: Path, inputs: Tensor, mask: Tensor, results: Tensor, per: int, spec: Any
                    ) -> list[Path]:
        """The .npz, the WAVs and the spectrograms: a row per input, the input and then its results."""
        written = super().write_edits(out, inputs, mask, results, per, spec)
        rate = int(spec.data.rate)
        written += [write_wav(out / f"edit-{i:04d}.wav", clip[0], rate) for i, clip in enumerate(results)]
        rows = torch.cat([torch.cat([inputs[i: i + 1], results[i * per: (i + 1) * per]]) for i in range(len(inputs))])
        return [*written, viz_audio.spectrogram_grid_png(out / "spectrograms.png", rows, nrow=per + 1)]

    def encode(self, data_info: Any, x: Tensor) -> Tensor:
        """Waveforms as the model's log-mel images (the waveform route: as they are)."""
        codec = codec_from_config(data_info.codec)
        return x if codec is None else codec.encode(x)

    def model_mask(self, data_info: Any, missing: Tensor) -> Tensor:
        """A mask over samples [..., 1, L] as one over the log-mel image: every frame whose window touches a
        masked sample (the waveform route: as it is)."""
        codec = codec_from_config(data_info.codec)
        if codec is None:
            return missing
        samples = missing.reshape(-1, missing.shape[-1]).any(0).float()  # [L]
        centred = F.pad(samples[None, None], (codec.n_fft // 2, codec.n_fft // 2))
        touched = F.max_pool1d(centred, codec.n_fft, stride=codec.hop)[0, 0, : codec.shape[2]] > 0
        return touched.expand(codec.shape)

    def write(self, out: Path, drawn: Drawn, spec: dict[str, Any], extras: Extras) -> list[Path]:
        """The WAVs, the .npz and the two pictures."""
        x, labels, rate = drawn.samples, drawn.labels, int(spec.data.rate)
        if out.suffix.lower() != ".wav":
            out.mkdir(parents=True, exist_ok=True)
        npz, picture, grid = audio_extras(out)
        wavs = [write_wav(path, clip[0], rate) for path, clip in zip(wav_paths(out, len(x), labels), x)]
        atomic_write_arrays(npz, samples=x.numpy(), rate=rate, **labels_in_files(labels))
        viz_audio.waveforms_png(picture, x, rate, labels)
        viz_audio.spectrogram_grid_png(grid, x, labels, nrow=None if labels is not None else 8)
        return [*wavs, npz, picture, grid]

    def preview(self, path: Path, samples: Tensor, labels: Tensor | None) -> Path | None:
        """The spectrograms, a row per class."""
        return viz_audio.spectrogram_grid_png(path, samples, labels=labels, nrow=self.preview_per_class)


def wav_paths(out: Path, n: int, labels: Tensor | None) -> list[Path]:
    """Where each of n samples goes: numbered (and class-tagged) files in a folder, or beside x.wav."""
    tags = [""] * n if labels is None else [f"-class{int(c)}" for c in labels]
    if out.suffix.lower() == ".wav":
        if n == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i:04d}{tags[i]}.wav") for i in range(n)]
    return [out / f"sample-{i:04d}{tags[i]}.wav" for i in range(n)]


def audio_extras(out: Path) -> tuple[Path, Path, Path]:
    """The .npz, the waveform picture and the spectrogram grid written beside an audio run's WAVs."""
    if out.suffix.lower() == ".wav":
        stem = out.with_suffix("")
        return stem.with_suffix(".npz"), stem.with_suffix(".png"), stem.with_name(f"{stem.name}_spectrograms.png")
    return out / "samples.npz", out / "samples.png", out / "spectrograms.png"
