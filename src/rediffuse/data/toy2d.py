"""Point data sets: the analytic 2-D mixtures (exact denoiser known) and user point files (.npy, .csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rediffuse.truth import analytic

TOY2D = ("moons", "swissroll", "8gaussians", "checkerboard", "spirals")
POINT_SUFFIXES = (".npy", ".csv")


def is_preset(spec: str) -> bool:
    """Whether spec names a built-in analytic mixture (the 2-D sets and the others in `analytic.PRESETS`)."""
    return spec in analytic.PRESETS


def is_point_file(spec: str) -> bool:
    """Whether spec is a path to a points file: a .csv, or a .npy holding a 2-D array [N, d]."""
    suffix = Path(spec).suffix.lower()
    if suffix == ".csv":
        return True
    if suffix != ".npy" or not Path(spec).is_file():
        return False
    try:
        return np.load(spec, mmap_mode="r", allow_pickle=False).ndim == 2
    except (ValueError, OSError):
        return True  # let load_points give the precise error


def sample_preset(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n points [n, d] (float32) drawn from the named analytic mixture."""
    return analytic.preset(name).sample(n, generator).to(torch.float32)


def _read_csv(path: Path) -> np.ndarray:
    """A numeric CSV as a 2-D float array; one header line of non-numbers is skipped."""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    rows = [ln.split(",") for ln in lines]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    for lineno, row in enumerate(rows, start=1):
        if not _numeric(row):
            raise ValueError(f"{path}: row {lineno} is not all numbers ({','.join(row)[:60]!r}); "
                             "expected comma-separated numbers, one point per line")
        if len(row) != len(rows[0]):
            raise ValueError(f"{path}: row {lineno} has {len(row)} columns but row 1 has {len(rows[0])}; "
                             "every point needs the same number of coordinates")
    return np.array([[float(v) for v in row] for row in rows], dtype=np.float64).reshape(len(rows), -1)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def load_points(path: str | Path) -> Tensor:
    """Points [N, d] (float32) from a .npy array or a comma-separated .csv file, one point per row."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"points file {str(path)!r} does not exist; give a .npy or .csv file of points [N, d]")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a readable .npy array ({err}); save it with numpy.save") from None
    elif suffix == ".csv":
        array = _read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported points file type {suffix!r}; use .npy or .csv")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{path}: expected a real numeric array, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{path}: expected points of shape [N, d] with N >= 2, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: contains NaN or infinite values; remove those rows")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def points_dataset(spec: str, n: int = 100_000, generator: torch.Generator | None = None) -> Tensor:
    """A points data set [N, d] (float32): n samples of a named mixture, or all points of a .npy/.csv file."""
    if is_preset(spec):
        return sample_preset(spec, n, generator)
    if Path(spec).suffix.lower() in POINT_SUFFIXES:
        return load_points(spec)
    raise ValueError(f"unknown points data {spec!r}; use one of {', '.join(analytic.PRESETS)} "
                     "or a .npy/.csv file of points [N, d]")


def mixture(spec: str) -> analytic.GaussianMixture | None:
    """The analytic mixture behind a points spec (for its exact denoiser), or None for a file."""
    return analytic.preset(spec) if is_preset(spec) else None
