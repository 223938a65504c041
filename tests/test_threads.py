"""`--threads auto`: the cores other processes keep busy, read from /proc/stat, are left to them."""

from __future__ import annotations

import pytest
import torch

from rediffuse import threads


def stat(busy: int, idle: int, iowait: int = 0) -> str:
    """A /proc/stat text whose all-CPU line has these tick counts (busy split over user and system)."""
    return f"cpu  {busy - busy // 3} 0 {busy // 3} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def test_cpu_ticks_counts_idle_and_iowait_as_not_busy():
    assert threads.cpu_ticks(stat(300, 500, 20)) == (300, 820)


def test_busy_elsewhere_subtracts_this_process_and_scales_by_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    # 0.25 s of two cores at 100 Hz: 50 ticks in all; 30 busy of which this process used 0.05 s = 5 ticks
    texts = iter([stat(1000, 4000), stat(1030, 4020)])
    own = iter([1.00, 1.05])
    busy = threads.busy_elsewhere(0.25, read=lambda: next(texts), own_seconds=lambda: next(own),
                                  sleep=lambda s: None, hertz=100.0)
    assert busy == pytest.approx((30 - 5) / 25, rel=1e-12)  # 1.0 core
    unreadable = threads.busy_elsewhere(read=lambda: "", sleep=lambda s: None)
    assert unreadable == 0.0


def test_auto_count_leaves_the_busy_cores_and_keeps_at_least_one():
    assert threads.auto_count(2, 2, 0.0) == 2 and threads.auto_count(2, 2, 0.4) == 2
    assert threads.auto_count(2, 2, 1.0) == 1 and threads.auto_count(2, 2, 3.0) == 1
    assert threads.auto_count(4, 8, 2.0) == 4  # never more than torch's count


def test_auto_threads_only_lowers_torchs_count_and_says_so(monkeypatch):
    said = []
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 1.0)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    with threads.cpu_threads(2):
        assert threads.auto_threads(said.append) == 1
    assert said and "keep 1.0 of 2 cores busy; running on 1 thread instead of 2" in said[0]
    with threads.cpu_threads(1):  # one thread already (the tests' setting): nothing to look at
        monkeypatch.setattr(threads, "busy_elsewhere", lambda: (_ for _ in ()).throw(AssertionError("looked")))
        assert threads.auto_threads(said.append) is None
    before = torch.get_num_threads()
    with threads.cpu_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
