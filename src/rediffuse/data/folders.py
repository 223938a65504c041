"""Data folders: every file of a kind at any depth, and class labels from first-level sub-folders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence


def files_under(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under `folder` at any depth whose suffix is one of `suffixes` (sorted; hidden files and folders
    skipped)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in suffixes
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def class_labels(folder: Path, files: Sequence[Path]) -> tuple[list[int], list[str]] | None:
    """(label per file, sorted class names) from each file's first-level sub-folder when every file is in one;
    None (unlabelled) otherwise, with a warning when some files lie loose beside sub-folders that hold others."""
    tops = [rel.parts[0] if len(rel.parts) > 1 else None for rel in (f.relative_to(folder) for f in files)]
    if files and all(t is not None for t in tops):
        names = sorted(set(tops))
        return [names.index(t) for t in tops], names
    if any(t is not None for t in tops):
        warnings.warn(f"{folder} holds files both at its top level and in sub-folders: all {len(files)} load "
                      "unlabelled; put every file in a class sub-folder for labels", stacklevel=3)
    return None
