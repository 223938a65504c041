"""What `rediffuse sample` will write, known before any work, so that existing files are never replaced silently."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rediffuse.errors import UsageError


def refuse_overwrite(paths: Sequence[Path], overwrite: bool) -> None:
    """UsageError naming the first existing path (and how many more) unless `overwrite`."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise UsageError(f"{str(existing[0])!r} exists{more}; pass --overwrite to replace it, or choose another --out")
