"""An exclusive lock on a run folder for the life of a training: a second training into it fails at once.

The lock is an advisory `flock` on `<run>/.lock`, which holds the holder's pid. The kernel releases it when the
holder exits in any way (a crash or SIGKILL included), so a lock is never stale; the file itself stays behind.
Platforms without `fcntl` (Windows) train unlocked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from rediffuse.errors import RunInUseError, UsageError

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    """The pid recorded in a lock file, or 'unknown'."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def run_lock(folder: str | Path, active: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (creating the folder) while the block runs; RunInUseError if another holds it."""
    folder = Path(folder)
    if not active:
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {str(folder)!r} is a file; give a folder for the run (a new or an existing run's)")
    try:
        import fcntl
    except ImportError:  # no advisory locks here
        yield
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    failed = True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUseError(f"run folder {str(folder)!r} is in use by another training (pid {_holder(path)}); "
                                "wait for it to end or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
        failed = False
    finally:
        os.close(fd)
        if failed and created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            path.unlink(missing_ok=True)  # a run that failed before writing anything leaves no folder
            folder.rmdir()
