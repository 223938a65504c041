"""CPU threads: how many intra-op threads torch uses, and the `--threads auto` choice beside other busy work.

Two OpenMP threads on two cores, one of which another process keeps busy, stall on each other at every
barrier: training ran at 0.29 of its idle speed on the project's 2-core machine, where one thread kept 1.03
(docs/results.md, benchmarks/thread_contention.py). So `auto` counts the cores that other processes keep busy
over a short window and leaves those to them, and keeps counting while it trains: `AutoThreads` looks at the
load again at every log interval and moves the count down when two looks in a row ask for it, up after one.
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


class LoadWatch:
    """Other processes' load between successive looks at /proc/stat (the window is the time between looks, so a
    look never sleeps)."""

    def __init__(self, read: Callable[[], str] | None = None, own_seconds: Callable[[], float] | None = None,
                 hertz: float | None = None, cores: int | None = None) -> None:
        self.read = read or (lambda: Path("/proc/stat").read_text())
        self.own_seconds = own_seconds or (lambda: sum(os.times()[:2]))
        self.hertz = hertz or (float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0)
        self.cores = cores or max(os.cpu_count() or 1, 1)
        self.last = self._snapshot()

    def _snapshot(self) -> tuple[int, int, float] | None:
        """(busy ticks, total ticks, this process's CPU seconds), or None where /proc/stat is unreadable."""
        try:
            return (*cpu_ticks(self.read()), self.own_seconds())
        except (OSError, ValueError, IndexError):
            return None

    def look(self) -> float | None:
        """The cores other processes kept busy since the last look (None without two readable looks)."""
        now, last = self._snapshot(), self.last
        self.last = now
        if now is None or last is None or now[1] <= last[1]:
            return None
        elapsed = (now[1] - last[1]) / self.cores
        return max((now[0] - last[0]) - (now[2] - last[2]) * self.hertz, 0.0) / elapsed


class AutoThreads:
    """`--threads auto` for a whole run: at each `revisit` (every log interval) the load since the last one
    gives a count (`auto_count`, between 1 and the ceiling). A lower count needs DOWN looks in a row asking for
    it, so a passing job or one noisy window does not halve the run; a higher one needs UP looks (one: the
    run takes its cores back within a log interval of the load ending, and gives them up again if it has not)."""

    DOWN, UP = 2, 1

    def __init__(self, ceiling: int, cores: int, watch: LoadWatch | None = None,
                 say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                 set_count: Callable[[int], None] = torch.set_num_threads,
                 get_count: Callable[[], int] = torch.get_num_threads) -> None:
        self.ceiling, self.cores, self.say = ceiling, cores, say
        self.watch = watch or LoadWatch()
        self.set_count, self.get_count = set_count, get_count
        self.pending: int | None = None
        self.agreeing = 0

    def revisit(self) -> int | None:
        """Move the thread count if enough looks in a row asked for the same new one; the new count or None."""
        busy = self.watch.look()
        if busy is None:
            return None
        current, wanted = self.get_count(), auto_count(self.ceiling, self.cores, busy)
        if wanted == current:
            self.pending, self.agreeing = None, 0
            return None
        self.agreeing = self.agreeing + 1 if wanted == self.pending else 1
        self.pending = wanted
        if self.agreeing < (self.DOWN if wanted < current else self.UP):
            return None
        self.set_count(wanted)
        self.pending, self.agreeing = None, 0
        self.say(f"rediffuse: other processes now keep {busy:.1f} of {self.cores} cores busy; running on "
                 f"{wanted} thread{'s' if wanted > 1 else ''} instead of {current}")
        return wanted


_ACTIVE: list[AutoThreads] = []  # the governor of the running command, while `--threads auto` holds


@contextlib.contextmanager
def governed(ceiling: int) -> Iterator[AutoThreads]:
    """Let `revisit` move the thread count of this command (`--threads auto`), up to ceiling threads."""
    governor = AutoThreads(ceiling, available_cores())
    _ACTIVE.append(governor)
    try:
        yield governor
    finally:
        _ACTIVE.remove(governor)


def revisit() -> int | None:
    """Re-read the load and move the thread count under `--threads auto` (a no-op otherwise)."""
    return _ACTIVE[-1].revisit() if _ACTIVE else None


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
