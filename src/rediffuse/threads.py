"""CPU threads: how many intra-op threads torch uses, and the `--threads auto` choice beside other busy work.

Two OpenMP threads on two cores, one of which another process keeps busy, stall on each other at every
barrier: training ran at 0.29 of its idle speed on the project's 2-core machine, where one thread kept 1.03
(docs/results.md, benchmarks/thread_contention.py). So `auto` counts the cores that other processes keep busy
over a short window and leaves those to them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

WINDOW_S = 0.25  # how long `busy_elsewhere` watches /proc/stat


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


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs from the text of /proc/stat (idle and iowait are not busy)."""
    fields = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - idle, total


def busy_elsewhere(window: float = WINDOW_S, read: Callable[[], str] | None = None,
                   own_seconds: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep,
                   hertz: float | None = None) -> float:
    """How many cores other processes kept busy over `window` seconds (0.0 where /proc/stat is unreadable)."""
    read = read or (lambda: Path("/proc/stat").read_text())
    own_seconds = own_seconds or (lambda: sum(os.times()[:2]))
    if hertz is None:
        hertz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    try:
        (busy0, total0), own0 = cpu_ticks(read()), own_seconds()
        sleep(window)
        (busy1, total1), own1 = cpu_ticks(read()), own_seconds()
    except (OSError, ValueError, IndexError):
        return 0.0
    cores = max(os.cpu_count() or 1, 1)
    elapsed = (total1 - total0) / cores  # ticks of one core's clock
    if elapsed <= 0:
        return 0.0
    return max((busy1 - busy0) - (own1 - own0) * hertz, 0.0) / elapsed


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_count(current: int, cores: int, busy: float) -> int:
    """`--threads auto`: the current count, less the cores that other processes keep busy, at least 1."""
    return max(1, min(current, cores - int(busy + 0.5)))


def auto_threads(say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> int | None:
    """The thread count for `--threads auto` (None: keep torch's), telling `say` when it leaves cores to others."""
    current = torch.get_num_threads()
    if current == 1:
        return None  # nothing to leave; and no 0.25 s look at the machine
    busy, cores = busy_elsewhere(), available_cores()
    n = auto_count(current, cores, busy)
    if n < current:
        say(f"rediffuse: other processes keep {busy:.1f} of {cores} cores busy; running on {n} "
            f"thread{'s' if n > 1 else ''} instead of {current} (--threads N to choose)")
        return n
    return None
