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


def test_a_load_watch_measures_other_processes_between_looks_without_sleeping():
    # two cores at 100 Hz: 200 ticks of all cores between looks (1 s); 150 busy, this process used 0.5 s
    texts = iter([stat(1000, 4000), stat(1150, 4050), "garbage"])
    own = iter([2.0, 2.5, 2.5])
    watch = threads.LoadWatch(read=lambda: next(texts), own_seconds=lambda: next(own), hertz=100.0, cores=2)
    assert watch.look() == pytest.approx((150 - 50) / 100, rel=1e-12)  # one core busy elsewhere
    assert watch.look() is None  # an unreadable look gives nothing, and the next starts afresh


class Looks:
    """A LoadWatch stand-in that reports a scripted load at each look."""

    def __init__(self, loads):
        self.loads = iter(loads)

    def look(self):
        return next(self.loads)


def test_auto_threads_gives_cores_up_after_two_busy_looks_and_takes_them_back_after_one_idle_look():
    count, said = [2], []
    governor = threads.AutoThreads(2, 2, Looks([1.0, 0.2, 1.2, 0.9, 0.9, None, 0.1, 3.0]), said.append,
                                   set_count=lambda n: count.__setitem__(0, n), get_count=lambda: count[0])
    moves = [governor.revisit() for _ in range(8)]
    # busy once (not yet), idle (reset), busy twice (down to 1), busy (stays), no reading, idle once (up to 2),
    # busy once (not yet)
    assert moves == [None, None, None, 1, None, None, 2, None] and count == [2]
    assert said == ["rediffuse: other processes now keep 0.9 of 2 cores busy; running on 1 thread instead of 2",
                    "rediffuse: other processes now keep 0.1 of 2 cores busy; running on 2 threads instead of 1"]


def test_revisit_is_a_no_op_unless_auto_governs_the_command(monkeypatch):
    assert threads.revisit() is None
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    with threads.governed(2) as governor:
        governor.watch = Looks([0.0])
        with threads.cpu_threads(1):
            governor.say = lambda m: None
            assert threads.revisit() == 2 and torch.get_num_threads() == 2
    assert threads.revisit() is None


def test_training_revisits_the_thread_count_at_every_log_interval(tmp_path, monkeypatch):
    from rediffuse.config import TrainConfig
    from rediffuse.train import train

    calls = []
    monkeypatch.setattr(threads, "revisit", lambda: calls.append(1))
    train(TrainConfig(data="moons", out=str(tmp_path / "run"), steps=6, log_every=2, batch_size=32, num_points=256,
                      progress=False, net_kwargs={"hidden": 16, "depth": 1, "emb_dim": 8}))
    assert len(calls) == 3
