"""The one atomic writer every file of the project goes through: temporary file, fsync, rename, fsync the folder.

A crash (even a power cut) leaves either the old file or the new one, never a torn one; a temporary file left
by a crash ends in `TEMP_SUFFIX` and starts with a dot (`rediffuse.checkpoint.remove_stale_temp` clears them).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to path via a temporary file in the same folder, fsync and os.replace; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes it private (0600); the file gets what open() would give it
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def file_mode() -> int:
    """The permission bits a newly created file gets from the process's umask (0o644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write(path, text.encode())


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> Path:
    """`atomic_write` of a value as JSON."""
    return atomic_write(path, json.dumps(value, indent=indent).encode())


def atomic_write_arrays(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """`atomic_write` of numpy arrays: .npz keeps them all by name, .npy the one called `samples`."""
    buf = io.BytesIO()
    if Path(path).suffix == ".npz":
        np.savez(buf, **arrays)
    else:
        np.save(buf, arrays["samples"])
    return atomic_write(path, buf.getvalue())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in folder durable (where the platform allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
