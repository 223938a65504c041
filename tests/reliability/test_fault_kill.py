"""Crash safety: SIGKILL a `python -m rediffuse train` process at random moments (seeded delays); each time the
newest complete checkpoint loads with verified hashes, and `--resume` then reaches a target step with weights,
EMA, optimizer and log bit-equal to one uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from rediffuse import checkpoint
from rediffuse.config import TrainConfig
from rediffuse.runs import load_run
from rediffuse.train import train

from reliability_common import TINY, assert_bit_equal, cli, env, final, flags, log_records, run

# Checkpoints and log records every 2 steps, so a kill often lands inside a save and every resume point
# starts a full log window (the logged losses then match the uninterrupted run too).
KILL = {**TINY, "checkpoint_every": 2, "log_every": 2, "keep_last": 2}
MAX_DELAY_S = 0.6  # after training has started (config.json rewritten) or, every other trial, after a new save


def _stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file, or None: atomic_write replaces the inode, so any rewrite changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_until(proc: subprocess.Popen, done: Callable[[], bool], what: str, log: Path) -> None:
    """Block until done() holds; fail if the child exits first or nothing happens within 120 s."""
    deadline = time.monotonic() + 120
    while not done():
        assert proc.poll() is None, f"training exited early ({proc.returncode}): {log.read_text()}"
        assert time.monotonic() < deadline, f"{what} did not happen within 120 s"
        time.sleep(0.005)


def _wait_for_training(proc: subprocess.Popen, config_json: Path, before: tuple[int, int] | None,
                       log: Path) -> None:
    """Block until the child rewrote config.json (its loop starts next); fail if it exits first."""
    _wait_until(proc, lambda: _stamp(config_json) not in (None, before), "the start of training", log)


def _newest_step(run_dir: Path) -> int:
    """The step of the newest complete checkpoint, -1 if there is none."""
    newest = checkpoint.latest(run_dir)
    return -1 if newest is None else int(newest.name.removeprefix(checkpoint.PREFIX))


def _kill_once(run_dir: Path, delay: float, log: Path, after_a_save: bool) -> None:
    """Start `train --resume` on run_dir, SIGKILL it `delay` seconds into training (with after_a_save: after
    its first new checkpoint), and reap it."""
    before, newest = _stamp(run_dir / "config.json"), _newest_step(run_dir)
    with log.open("w") as out:
        proc = subprocess.Popen(cli("train", "--resume", "--out", str(run_dir), "--steps", "1000000", *flags(KILL)),
                                env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_training(proc, run_dir / "config.json", before, log)
        if after_a_save:
            _wait_until(proc, lambda: _newest_step(run_dir) > newest, "a new checkpoint", log)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()


def _inspect(run_dir: Path, newest_before: int) -> dict:
    """Check the run after a kill; return what the kill left (newest step, half-written files and folders)."""
    newest = checkpoint.latest(run_dir)
    if newest is not None:
        ck = checkpoint.load(newest)  # every size and sha256 verified
        assert ck.step >= newest_before, "a kill lost a checkpoint that had been complete"
        assert checkpoint.nonfinite(ck.tensors) is None
        load_run(run_dir)  # and sampling finds and builds it
    complete = [p for p in checkpoint.list_checkpoints(run_dir) if checkpoint.is_complete(p)]
    for path in complete:
        checkpoint.load(path)
    step = -1 if newest is None else ck.step
    partial = [int(p.name.removeprefix(checkpoint.PREFIX)) for p in checkpoint.list_checkpoints(run_dir)
               if p not in complete]
    return {"step": step, "temp_files": len(list(run_dir.rglob(f"*{checkpoint.TEMP_SUFFIX}"))),
            "half_saved": sum(s > step for s in partial), "half_pruned": sum(s < step for s in partial)}


def kill_and_resume(tmp_path: Path, trials: int, seed: int) -> list[dict]:
    """`trials` SIGKILLs at seeded random moments, then resume to 10 steps past the newest checkpoint and
    compare with an uninterrupted in-process run to the same step, bit for bit. The moments count from the
    start of training, in every other trial from the first checkpoint that trial writes (so some kills land
    after a save whatever the machine's speed)."""
    rng = random.Random(seed)
    run_dir, outcomes = tmp_path / "killed", []
    for trial in range(trials):
        delay = rng.uniform(0, MAX_DELAY_S)
        _kill_once(run_dir, delay, tmp_path / f"trial-{trial}.log", after_a_save=trial % 2 == 1)
        outcomes.append({"delay": round(delay, 3), **_inspect(run_dir, max([-1] + [o["step"] for o in outcomes]))})
    target = max(o["step"] for o in outcomes) + 10
    run(cli("train", "--resume", "--out", str(run_dir), "--steps", str(target), *flags(KILL)))
    reference = tmp_path / "reference"
    torch.set_num_threads(1)
    train(TrainConfig(out=str(reference), steps=target, **{**KILL, "checkpoint_every": target}))
    assert_bit_equal(final(run_dir), final(reference), parts=("model", "ema", "optimizer", "rng"))
    keys = ("step", "loss", "grad_norm", "skipped")
    assert [[r[k] for k in keys] for r in log_records(run_dir)] == [[r[k] for k in keys]
                                                                     for r in log_records(reference)]
    assert checkpoint.remove_stale_temp(run_dir) == []  # the last resume cleaned up after the kills
    print(f"\nkill trials (seed {seed}): {outcomes}; resumed to step {target}: bit-equal")
    return outcomes


def test_sigterm_stops_with_a_checkpoint(tmp_path):
    """SIGTERM (a scheduler's or torchrun's shutdown) acts like Ctrl-C: stop after the step, save, exit 130."""
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cli("train", "--out", str(run_dir), "--steps", "1000000",
                                    *flags({**KILL, "checkpoint_every": 1000000})),
                                env=env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_training(proc, run_dir / "config.json", None, log)
        records = run_dir / "log.jsonl"  # its first record: the loop runs, so the signal handler is installed
        _wait_until(proc, lambda: records.exists() and records.stat().st_size > 0, "the first log record", log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        proc.kill()
    newest = checkpoint.latest(run_dir)
    assert newest is not None and f"interrupted at step {checkpoint.load(newest).step};" in log.read_text()


def test_sigkill_then_resume_is_exact(tmp_path):
    outcomes = kill_and_resume(tmp_path, trials=3, seed=0)
    assert any(o["step"] > 0 for o in outcomes)


@pytest.mark.slow
def test_sigkill_many_times_then_resume_is_exact(tmp_path):
    outcomes = kill_and_resume(tmp_path, trials=20, seed=1)
    assert sum(o["step"] > 0 for o in outcomes) >= 10
