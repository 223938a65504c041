"""Pictures: point scatters, reverse-process strips, loss curves, image grids and trajectory GIFs.

Figures use matplotlib's object API on the Agg canvas (no global backend change); images use Pillow.
Every file is written atomically (temporary file + os.replace).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from rediffuse.io import atomic_write

Snapshot = tuple[float, Tensor]  # (sigma, x) at one step of the reverse process


def figure(width: float, height: float) -> Figure:
    """A matplotlib figure that draws off-screen (no pyplot, so a notebook's backend is left alone)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write a figure as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=dpi or "figure")
    atomic_write(path, buf.getvalue())
    return Path(path)


def save_image(image: Image.Image, path: str | Path, **options) -> Path:
    """Write a Pillow image (format from the suffix), atomically."""
    buf = io.BytesIO()
    image.save(buf, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"), **options)
    atomic_write(path, buf.getvalue())
    return Path(path)


def _xy(points: Tensor | np.ndarray) -> np.ndarray:
    """The first two coordinates of points [N, d] as a float array (a zero y for d = 1)."""
    arr = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    arr = arr.reshape(arr.shape[0], -1)
    return arr[:, :2] if arr.shape[1] >= 2 else np.concatenate([arr, np.zeros_like(arr)], 1)


def _limits(*sets: np.ndarray) -> tuple[float, float, float, float]:
    """Square-ish plot limits covering the 0.5-99.5 percentiles of the given point sets, with a margin."""
    pts = np.concatenate([s for s in sets if len(s)])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.1 * (hi - lo).max() + 1e-6
    return lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad


def _scatter_axes(ax, samples: np.ndarray, data: np.ndarray | None, limits, title: str | None) -> None:
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", linewidths=0, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:blue", linewidths=0, alpha=0.7, label="samples")
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def scatter_png(path: str | Path, samples: Tensor | np.ndarray, data: Tensor | np.ndarray | None = None,
                title: str | None = None) -> Path:
    """Samples (blue) over data (grey), first two coordinates, as a PNG."""
    s = _xy(samples)
    d = None if data is None else _xy(data)
    fig = figure(5, 5)
    ax = fig.add_subplot()
    _scatter_axes(ax, s, d, _limits(*([d] if d is not None else [s])), title)
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    return save_figure(fig, path)


def strip_picks(sigmas: Sequence[float], scale: float, relative: Sequence[float] = (2, 1, 0.5, 0.25, 0.1)
                ) -> list[int]:
    """Indices of a descending sigma list for a strip: the first, the last, and those nearest (in log sigma) to
    `scale * relative` (the noise levels where the structure forms, for data of that scale)."""
    picks = {0, len(sigmas) - 1}
    logs = [math.log(s) if s > 0 else -math.inf for s in sigmas]
    for r in relative:
        target = math.log(scale * r)
        picks.add(min(range(len(sigmas)), key=lambda i: abs(logs[i] - target)))
    return sorted(picks)


def reverse_strip_png(path: str | Path, snapshots: Sequence[Snapshot], data: Tensor | np.ndarray | None = None
                      ) -> Path:
    """A row of scatters of x at decreasing sigma through the reverse process (each panel zoomed to fit), as a PNG.

    The last panel also shows the data, on the data's scale.
    """
    d = None if data is None else _xy(data)
    fig = figure(2.4 * len(snapshots), 2.6)
    for k, (sigma, x) in enumerate(snapshots):
        last = k == len(snapshots) - 1
        xy = _xy(x)
        ax = fig.add_subplot(1, len(snapshots), k + 1)
        limits = _limits(d if last and d is not None else xy)
        _scatter_axes(ax, xy, d if last else None, limits, f"sigma = {sigma:.3g}")
    return save_figure(fig, path)


def read_log(path: str | Path) -> list[dict]:
    """The records of a JSONL log (unparseable lines skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def loss_curve_png(path: str | Path, log_path: str | Path) -> Path:
    """Training loss against step (log scale if it spans a decade) from a run's log.jsonl, as a PNG."""
    records = [r for r in read_log(log_path) if "step" in r and "loss" in r]
    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    if records:
        steps = [r["step"] for r in records]
        losses = [r["loss"] for r in records]
        ax.plot(steps, losses, lw=1)
        if min(losses) > 0 and max(losses) > 10 * min(losses):
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def to_uint8(images: Tensor) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] as uint8 [N, H, W, C]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: Tensor, nrow: int | None = None, labels: Tensor | None = None, pad: int = 1) -> Image.Image:
    """A grid of images [N, C, H, W] in [-1, 1]; with labels, one row per class (sorted), else `nrow` per row."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in 1 or 3, got {tuple(images.shape)}")
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    if labels is not None:
        classes = sorted(set(labels.tolist()))
        rows = [[i for i in range(n) if labels[i] == cls] for cls in classes]
    else:
        per_row = nrow or max(1, math.ceil(math.sqrt(n)))
        rows = [list(range(i, min(n, i + per_row))) for i in range(0, n, per_row)]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for r, row in enumerate(rows):
        for k, i in enumerate(row):
            top, left = pad + r * (h + pad), pad + k * (w + pad)
            canvas[top:top + h, left:left + w] = pixels[i]
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def _upscale(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Enlarge small images by an integer factor (nearest neighbour) so they are visible."""
    factor = max(1, math.ceil(min_side / max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def image_grid_png(path: str | Path, images: Tensor, nrow: int | None = None, labels: Tensor | None = None) -> Path:
    """An image grid (see `image_grid`), enlarged if tiny, as a PNG."""
    return save_image(_upscale(image_grid(images, nrow, labels)), path)


def image_pngs(paths: Sequence[Path], images: Tensor) -> list[Path]:
    """Each image [C, H, W] in [-1, 1] of images [N, ...] as its own PNG at its native size (grey or RGB)."""
    pixels = to_uint8(images)
    return [save_image(Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p), path) for path, p in zip(paths, pixels)]


def save_gif(path: str | Path, pictures: Sequence[Image.Image], duration_ms: int = 150) -> Path:
    """Write frames as a looping GIF that holds the last frame longer, atomically."""
    if not pictures:
        raise ValueError("an animation needs at least one frame")
    frames = [p.convert("P", palette=Image.Palette.ADAPTIVE) for p in pictures]
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 8]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    atomic_write(path, buf.getvalue())
    return Path(path)


def trajectory_gif(path: str | Path, frames: Sequence[tuple[float, Tensor, Tensor]], duration_ms: int = 150
                   ) -> Path:
    """A GIF of the reverse process for images: each frame shows x (top row, rescaled) and D(x) (bottom row).

    `frames` holds (sigma, x, denoised) with x in VE form; x is divided by sqrt(1 + sigma^2) for display.
    """
    pictures = []
    for sigma, x, denoised in frames:
        shown = x / math.sqrt(1 + sigma**2)
        both = torch.cat([shown, denoised]).clamp(-1, 1)
        pictures.append(_upscale(image_grid(both, nrow=x.shape[0])))
    return save_gif(path, pictures, duration_ms)


def points_gif(path: str | Path, snapshots: Sequence[Snapshot], data: Tensor | np.ndarray | None = None,
               duration_ms: int = 150) -> Path:
    """A GIF of points moving through the reverse process (one scatter per snapshot)."""
    d = None if data is None else _xy(data)
    limits = _limits(d if d is not None else _xy(snapshots[-1][1]))
    pictures = []
    for sigma, x in snapshots:
        fig = figure(4, 4)
        _scatter_axes(fig.add_subplot(), _xy(x), d, limits, f"sigma = {sigma:.3g}")
        canvas = fig.canvas
        canvas.draw()
        pictures.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    return save_gif(path, pictures, duration_ms)
