"""What `rediffuse sample` will write, known before any work, so that existing files are never replaced silently."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import Tensor

from rediffuse.errors import UsageError


def wav_paths(out: Path, n: int, labels: Tensor | None) -> list[Path]:
    """Where each of n samples goes: numbered (and class-tagged) files in a folder, or beside x.wav."""
    tags = [""] * n if labels is None else [f"-class{int(c)}" for c in labels]
    if out.suffix.lower() == ".wav":
        if n == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i:04d}{tags[i]}.wav") for i in range(n)]
    return [out / f"sample-{i:04d}{tags[i]}.wav" for i in range(n)]


def image_paths(out: Path, n: int, labels: Tensor | None) -> tuple[list[Path], Path, Path]:
    """(one PNG per image, the grid, the .npz) of an image run's --out: x.png (grid and x.npz only) or DIR/
    (DIR/sample-00000[-class3].png for each image; the grid DIR.png and DIR.npz beside the folder)."""
    if out.suffix.lower() == ".png":
        return [], out, out.with_suffix(".npz")
    tags = [""] * n if labels is None else [f"-class{int(c)}" for c in labels]
    return [out / f"sample-{i:05d}{tags[i]}.png" for i in range(n)], out.with_name(out.name + ".png"), \
        out.with_name(out.name + ".npz")


def audio_extras(out: Path) -> tuple[Path, Path, Path]:
    """The .npz, the waveform picture and the spectrogram grid written beside an audio run's WAVs."""
    if out.suffix.lower() == ".wav":
        stem = out.with_suffix("")
        return stem.with_suffix(".npz"), stem.with_suffix(".png"), stem.with_name(f"{stem.name}_spectrograms.png")
    return out / "samples.npz", out / "samples.png", out / "spectrograms.png"


def planned(kind: str, out: Path, n: int, labels: Tensor | None, trajectory: Path | None) -> list[Path]:
    """Every file a sample command of a run of `kind` writes for `--out out` (and `--trajectory`)."""
    files = {"points": lambda: [out, out.with_name(f"{out.stem}_scatter.png"),
                                out.with_name(f"{out.stem}_reverse.png")],
             "images": lambda: [*image_paths(out, n, labels)[0], *image_paths(out, n, labels)[1:]],
             "audio": lambda: [*wav_paths(out, n, labels), *audio_extras(out)],
             "text": lambda: [out]}[kind]()
    return files + ([] if trajectory is None else [trajectory])


def refuse_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    """UsageError naming the first existing path (and how many more) unless `overwrite`."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise UsageError(f"{str(existing[0])!r} exists{more}; pass --overwrite to replace it, or choose another --out")
