"""Audio as log-mel "images": the spectrogram route for audio diffusion (`--audio-representation mel`).

A clip [1, L] becomes a log-mel image [1, n_mels, L / hop]: the mel power of a Hann STFT (n_fft, hop,
centred frames, the last frame dropped), in dB above a fixed floor, mapped affinely so that silence is -1 and
`top_db` above the floor is +1. Decoding inverts each step: dB to mel power, mel to linear power by non-negative
least squares (`rediffuse.audio.spectral.mel_to_power`), and the phase by fast Griffin-Lim
(`rediffuse.audio.spectral.griffin_lim`), from zero or from phase gradient heap integration
(`rediffuse.audio.phase.pghi`). The images are what the denoiser learns; the waveforms are what users
hear and the evaluation classifies.

The floor sits far below speech (1e-9, 130 dB to +1; runs before issue 41 kept 1e-5 and 90 dB in their spec):
a model's small error at the -1 of silence then decodes to sound about 100 dB below the speech rather than the
60 dB hiss the 1e-5 floor gave (FSDD clips with 0.01 of noise added to their images: -103 dB against -65 dB).

The level a trained model's clips come out at moves with the sampler: with fresh noise at every step
(euler-ancestral) an imperfect denoiser loses the loud parts, 0.81-0.84x the recordings' geometric-mean RMS on
fsdd-fast (issue 41). New runs store their training clips' geometric-mean RMS and peak (`reference`); after
training, `rediffuse.train.level` draws clips the way the run recommends and stores the gain that brings them to
that level (`gain`, applied to every decoded waveform).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rediffuse.audio.levels import matching_gain
from rediffuse.audio.phase import pghi
from rediffuse.audio.spectral import griffin_lim, mel_filterbank, mel_to_power, stft_power

REPRESENTATIONS = ("waveform", "mel", "linear")


@dataclass(frozen=True)
class MelCodec:
    """Waveforms [N, 1, L] <-> log-mel images [N, 1, n_mels, L / hop] at `rate` Hz; with frequency 'linear',
    log-magnitude images of the STFT's own bins [N, 1, n_fft / 2, L / hop] (the Nyquist bin dropped): no mel
    inversion, twice the rows."""

    rate: int
    length: int
    n_fft: int = 256
    hop: int = 128
    n_mels: int = 64
    frequency: str = "mel"  # or "linear"
    floor: float = 1e-9  # mel power of silence (the -1 of the image): FSDD speech sits 80-120 dB above it
    top_db: float = 130.0  # dB above the floor that map to +1
    iters: int = 32  # Griffin-Lim iterations when decoding
    phase: str = "zero"  # Griffin-Lim's first phase: "zero", or "pghi" (heap integration of the magnitude)
    offset: float = 0.0  # subtracted from every image value: new runs take their training images' mean
    gain: float = 1.0  # on the decoded waveform: the level calibration a run fits after training (`calibrated`)
    reference: tuple[float, float] | None = None  # the training clips' geometric-mean RMS and peak: the level

    def __post_init__(self) -> None:
        if self.length % self.hop:
            raise ValueError(f"the mel representation needs a clip length that is a multiple of its hop "
                             f"{self.hop}, got {self.length}; give --clip-length {self.length // self.hop * self.hop}"
                             f" or {-(-self.length // self.hop) * self.hop}")
        if self.n_fft < self.hop or self.n_mels < 1 or self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"need n_fft >= hop and 1 <= n_mels <= n_fft // 2 + 1, got n_fft {self.n_fft}, "
                             f"hop {self.hop}, n_mels {self.n_mels}")
        if self.frequency not in ("mel", "linear"):
            raise ValueError(f"unknown frequency scale {self.frequency!r}; choose mel or linear")
        if self.phase not in ("zero", "pghi"):
            raise ValueError(f"unknown starting phase {self.phase!r}; choose zero or pghi")

    @property
    def rows(self) -> int:
        """Image rows: mel bands, or the STFT bins below Nyquist."""
        return self.n_mels if self.frequency == "mel" else self.n_fft // 2

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one encoded clip."""
        return (1, self.rows, self.length // self.hop)

    def centred(self, images: Tensor) -> tuple[MelCodec, Tensor]:
        """(this codec offset by the mean of images it encoded, the images less that mean): zero-mean data, as
        the scalings of EDM's preconditioning are derived for (Karras et al. 2022, section 5)."""
        mean = round(float(images.double().mean()) + self.offset, 4)
        return replace(self, offset=mean), images - (mean - self.offset)

    def calibrated(self, measured: tuple[float, float]) -> MelCodec:
        """This codec with the gain that brings clips it decoded, whose geometric-mean (RMS, peak) were `measured`,
        to the reference level (unchanged without a reference)."""
        if self.reference is None:
            return self
        return replace(self, gain=round(self.gain * matching_gain(measured, self.reference), 6))

    def config(self) -> dict[str, Any]:
        """The codec as JSON (what a run's spec stores)."""
        return {"kind": "mel", **asdict(self)}

    def _bank(self, like: Tensor) -> Tensor:
        return mel_filterbank(self.n_fft, self.n_mels, self.rate).to(like.device, like.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """Images [N, 1, rows, frames] in [-1, 1] (less the offset) of waveforms x [N, 1, L]."""
        power = stft_power(x.reshape(len(x), -1), self.n_fft, self.hop)
        if self.frequency == "mel":
            power = torch.einsum("bft,fm->bmt", power, self._bank(x))
        db = 10.0 * torch.log10(power[:, : self.rows, :-1] / self.floor + 1.0)
        return (2.0 * db / self.top_db - 1.0).clamp(-1.0, 1.0).unsqueeze(1) - self.offset

    def power(self, images: Tensor) -> Tensor:
        """The linear-frequency power [N, n_fft / 2 + 1, frames + 1] images stand for (values plus the offset
        clamped to [-1, 1]; the dropped last frame and Nyquist bin are silence)."""
        values = images.reshape(len(images), self.rows, -1).float() + self.offset
        db = (values.clamp(-1.0, 1.0) + 1.0) * self.top_db / 2
        power = F.pad(self.floor * (10.0 ** (db / 10.0) - 1.0), (0, 1))
        if self.frequency == "mel":
            return mel_to_power(power, self._bank(power))
        return F.pad(power, (0, 0, 0, 1))

    def decode(self, images: Tensor) -> Tensor:
        """Waveforms [N, 1, L] in [-1, 1] of images [N, 1, rows, frames] (phase by fast Griffin-Lim)."""
        magnitude = self.power(images).sqrt()
        start = pghi(magnitude, self.n_fft, self.hop) if self.phase == "pghi" else None
        x = griffin_lim(magnitude, self.n_fft, self.hop, self.length, self.iters, phase=start) * self.gain
        return x.clamp(-1.0, 1.0).unsqueeze(1)


def codec_from_config(config: dict[str, Any] | None) -> MelCodec | None:
    """The codec a run's data spec names (None: the model works on waveforms)."""
    if not config:
        return None
    values = {k: v for k, v in config.items() if k != "kind"}
    if values.get("reference") is not None:
        values["reference"] = tuple(values["reference"])
    return MelCodec(**values)


def to_waveforms(data_info: dict[str, Any], x: Tensor) -> Tensor:
    """Samples of an audio run as waveforms [N, 1, L]: decoded when the run learns log-mel images."""
    codec = codec_from_config(data_info.get("codec"))
    return x if codec is None else codec.decode(x)
