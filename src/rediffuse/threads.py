"""CPU threads: how many intra-op threads torch uses for a piece of work."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run torch's CPU work on n intra-op threads (None: unchanged), restoring the previous count after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
