"""Training time: the run's clock (earlier sessions included), its time budget and timed checkpoints.

The clock is a callable returning seconds (default `time.monotonic`). For tests only, the environment
variable REDIFFUSE_TEST_CLOCK=<seconds> replaces it in every process that trains (torchrun's children too)
with `TickClock`: each reading advances the time by that many seconds, so a run's time-dependent decisions
(budget, timed checkpoints, a cosine learning rate over the budget) do not depend on the machine's speed.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Protocol

from rediffuse.errors import ConfigError

TEST_CLOCK_ENV = "REDIFFUSE_TEST_CLOCK"

Now = Callable[[], float]


class TickClock:
    """A deterministic clock: readings 0, tick, 2 tick, ... (seconds)."""

    def __init__(self, tick: float) -> None:
        self.tick, self.readings = tick, 0

    def __call__(self) -> float:
        """The next reading."""
        value = self.readings * self.tick
        self.readings += 1
        return value


def default_clock() -> Now:
    """time.monotonic, or a `TickClock` where the test-only REDIFFUSE_TEST_CLOCK is set."""
    value = os.environ.get(TEST_CLOCK_ENV)
    if not value:
        return time.monotonic
    try:
        tick = float(value)
    except ValueError:
        tick = math.nan
    if not 0 < tick < math.inf:
        raise ConfigError(f"{TEST_CLOCK_ENV}={value!r} must be a positive number of seconds per clock reading; "
                          "it is a test-only setting, unset it for real runs")
    return TickClock(tick)


class Timed(Protocol):
    """What the clock keeps up to date: the run's training time in seconds."""

    elapsed: float


class Clock:
    """Training time of the run: the elapsed time restored from the checkpoint plus this session's."""

    def __init__(self, state: Timed, minutes: float | None, every_minutes: float | None,
                 now: Now | None = None) -> None:
        self.now = default_clock() if now is None else now
        self.state, self.start, self.base = state, self.now(), state.elapsed
        self.budget = None if minutes is None else 60 * minutes
        self.every = None if every_minutes is None else 60 * every_minutes
        self.next_save = None if self.every is None else (math.floor(self.base / self.every) + 1) * self.every

    def tick(self) -> float:
        """Update and return state.elapsed."""
        self.state.elapsed = self.base + self.now() - self.start
        return self.state.elapsed

    def out_of_time(self) -> bool:
        """Whether the run's time budget (counting earlier sessions) is spent."""
        return self.budget is not None and self.tick() >= self.budget

    def save_due(self) -> bool:
        """Whether a timed checkpoint is due (each is due once, every `checkpoint_minutes`)."""
        if self.next_save is None or self.tick() < self.next_save:
            return False
        self.next_save = (math.floor(self.state.elapsed / self.every) + 1) * self.every
        return True
