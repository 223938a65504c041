"""Images [N, C, H, W] in [-1, 1]: a grid PNG (rows per class when conditional) and an .npz, or one PNG per
image in a folder; the reverse process of the first eight as a GIF with --trajectory."""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from rediffuse import viz
from rediffuse.keys import need, need_positive_ints, opt
from rediffuse.errors import UsageError
from rediffuse.io import atomic_write_arrays
from rediffuse.modalities.base import Drawn, Extras, labels_in_files, refuse_suffix
from rediffuse.modalities.gaussian import GaussianModality
from rediffuse.modalities.points import frames

@dataclass
class ImageKeys:
    """The keys of image data."""

    image_size: int | None = opt(None, "resize images to this size (default: as stored)")
    hflip: bool = opt(False, "images: flip a random half of each batch left-right (data augmentation)")
    max_image_side: int = opt(1024, "refuse images with a longer side when --image-size is not given")


TRAJECTORY_SAMPLES = 8  # images animated by --trajectory


class Images(GaussianModality):
    """Pictures of any size and channel count (digits, MNIST, folders, arrays)."""

    name = "images"
    a_run = "an image run"
    keys = ImageKeys  # the config keys this kind of data reads
    mirrors = True
    eval_metrics = ("fd", "prdc", "acc", "is", "nll")
    preview_per_class = 8

    def check_keys(self, config: Any) -> None:
        """ConfigError naming the first invalid image key."""
        need_positive_ints(config, ("max_image_side",))
        need(config.image_size is None or config.image_size >= 1, "image_size must be a positive integer")

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """A 2-D UNet."""
        return "unet"

    def default_out(self, run_dir: Path) -> Path:
        """RUN/samples.png."""
        return run_dir / "samples.png"

    def check_out(self, out: Path) -> None:
        """A .png path (the grid) or a folder (one PNG per image)."""
        if out.suffix == "":
            if out.is_file():
                raise UsageError(f"--out {str(out)!r} is a file; give a folder for one PNG per image, or x.png")
            return
        refuse_suffix(out, (".png",), "an image run (or a folder for one PNG per image)")

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """One PNG per image (folder outputs), the grid and the .npz."""
        singles, grid, npz = image_paths(out, n, labels)
        return [*singles, grid, npz]

    def deliver(self, data_info: dict[str, Any], x: Tensor) -> Tensor:
        """Clamped to [-1, 1]."""
        return x.clamp(-1, 1)

    def write(self, out: Path, drawn: Drawn, spec: dict[str, Any], extras: Extras) -> list[Path]:
        """The grid .png, the .npz (and single PNGs for a folder, the GIF for a trajectory)."""
        x, labels = drawn.samples, drawn.labels
        singles, grid, npz = image_paths(out, len(x), labels)
        if singles:
            out.mkdir(parents=True, exist_ok=True)
        written = [*viz.image_pngs(singles, x), viz.image_grid_png(grid, x, labels=labels)]
        written.append(atomic_write_arrays(npz, samples=x.numpy(), **labels_in_files(labels)))
        if extras.trajectory is not None and extras.redraw is not None:
            again = extras.redraw(min(TRAJECTORY_SAMPLES, len(x)))
            final = again.samples
            written.append(viz.trajectory_gif(extras.trajectory, frames(again.steps) + [(0.0, final, final)]))
        return written

    def edit_outputs(self, out: Path, n: int) -> list[Path]:
        """The .npz and the picture."""
        return [*super().edit_outputs(out, n), out / "edits.png"]

    def write_edits(self, out: Path, inputs: Tensor, mask: Tensor, results: Tensor, per: int, spec: Any
                    ) -> list[Path]:
        """The .npz and a picture: a row per input, with the input, the mask and its results."""
        written = super().write_edits(out, inputs, mask, results, per, spec)
        shown = mask.float() * 2 - 1
        rows = [torch.cat([inputs[i: i + 1], shown[None], results[i * per: (i + 1) * per]]) for i in range(len(inputs))]
        return [*written, viz.image_grid_png(out / "edits.png", torch.cat(rows), nrow=per + 2)]

    def preview(self, path: Path, samples: Tensor, labels: Tensor | None) -> Path | None:
        """A grid of the samples, eight a row."""
        return viz.image_grid_png(path, samples, labels=labels, nrow=8)


def image_paths(out: Path, n: int, labels: Tensor | None) -> tuple[list[Path], Path, Path]:
    """(one PNG per image, the grid, the .npz) of an image run's --out: x.png (grid and x.npz only) or DIR/
    (DIR/sample-00000[-class3].png for each image; the grid DIR.png and DIR.npz beside the folder)."""
    if out.suffix.lower() == ".png":
        return [], out, out.with_suffix(".npz")
    tags = [""] * n if labels is None else [f"-class{int(c)}" for c in labels]
    return [out / f"sample-{i:05d}{tags[i]}.png" for i in range(n)], out.with_name(out.name + ".png"), \
        out.with_name(out.name + ".npz")
