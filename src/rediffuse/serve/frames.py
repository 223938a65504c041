"""What the page draws of one state of a reverse process, as JSON: a PNG (images, spectrograms), points, texts;
and the finished draw's extras (each audio sample as a WAV).

PNGs and WAVs travel as base64 data URLs, so the page needs nothing but the event stream.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import soundfile
from PIL import Image
from torch import Tensor

from rediffuse import viz
from rediffuse.data.text import Vocabulary
from rediffuse.viz.audio import spectrogram_images

MIN_SIDE = 320  # pixels: small images are enlarged (nearest neighbour) for the canvas
POINTS_SHOWN = 2000  # at most this many points per frame


def png_url(image: Image.Image, enlarge: bool = True) -> str:
    """A PNG data URL of a picture, enlarged to at least MIN_SIDE pixels on its shorter side (unless not)."""
    scale = max(1, MIN_SIDE // max(1, min(image.size))) if enlarge else 1
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wav_url(clip: Tensor, rate: int) -> str:
    """A 16-bit WAV data URL of one mono clip [L] in [-1, 1]."""
    buffer = io.BytesIO()
    soundfile.write(buffer, clip.clamp(-1, 1).numpy().astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode()


def frame(kind: str, spec: Any, x: Tensor) -> dict[str, Any]:
    """One state x (a batch, as the sampler holds it) of a `kind` run as the page draws it."""
    x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    if kind == "points":
        shown = x[:POINTS_SHOWN, :2]
        return {"kind": "points", "xy": [[round(float(a), 4), round(float(b), 4)] for a, b in shown.tolist()]}
    if kind == "images":
        return {"kind": "image", "png": png_url(viz.image_grid(x.clamp(-1, 1)))}
    if kind == "audio":  # the log-mel image the UNet draws, or the waveform's spectrogram
        pictures = x if x.ndim == 4 else spectrogram_images(x)
        return {"kind": "image", "png": png_url(viz.image_grid(pictures.clamp(-1, 1)))}
    if kind == "text":
        vocab = Vocabulary.from_dict(spec.vocab)
        return {"kind": "text", "texts": [vocab.decode(row, mask="_") for row in x]}
    raise ValueError(f"the page shows points, images, audio and text runs, not {kind}")


def finished(kind: str, spec: Any, samples: Tensor) -> dict[str, Any]:
    """The delivered samples as the last frame, with a WAV per clip for audio and each image alone (to edit)."""
    if kind == "images":
        singles = [png_url(viz.image_grid(image[None].clamp(-1, 1), pad=0), enlarge=False) for image in samples]
        return {**frame(kind, spec, samples), "singles": singles}
    if kind == "audio":
        rate = int(spec.data.rate)
        return {**frame(kind, spec, samples), "wavs": [wav_url(clip[0], rate) for clip in samples.float()]}
    return frame(kind, spec, samples if kind != "text" else samples.long())


def thin(total: int, most: int) -> int:
    """Send every k-th step so that about `most` frames go out (k >= 1)."""
    return max(1, -(-total // max(1, most)))

