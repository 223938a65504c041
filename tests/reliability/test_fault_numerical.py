"""Numerical faults: a non-finite loss or gradient skips the step (counted in log.jsonl); a streak of
`max_bad_steps` stops the run with exit code 1 and its last good checkpoint intact; NaN never reaches a
checkpoint or the training data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rediffuse import checkpoint
from rediffuse.core import losses
from rediffuse.train import loop as train_loop
from rediffuse.checkpoint import CheckpointError
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.errors import NonFiniteError
from rediffuse.train import train

from reliability_common import TINY, flags, log_records


def poison_gradients(monkeypatch, steps: set[int]) -> None:
    """Make the gradient of the first parameter infinite at the given (0-based) steps."""
    real = train_loop.new_state

    def new_state(*args, **kwargs):
        state = real(*args, **kwargs)
        first = next(state.net.parameters())
        first.register_hook(lambda g: g * math.inf if state.step in steps else g)
        return state

    monkeypatch.setattr(train_loop, "new_state", new_state)


def poison_loss(monkeypatch, first_bad: int) -> None:
    """Make the loss NaN from the (0-based) step first_bad on (counting loss calls of this process)."""
    real, calls = losses.denoising_loss, [0]

    def loss(*args, **kwargs):
        value = real(*args, **kwargs)
        calls[0] += 1
        return value * math.nan if calls[0] > first_bad else value

    monkeypatch.setattr(losses, "denoising_loss", loss)


def record_weights(monkeypatch) -> list[list[torch.Tensor]]:
    """After every step, a copy of the network's and the EMA's parameters (index k: after step k)."""
    real, snapshots = train_loop.train_step, []

    def step(state, *args, **kwargs):
        out = real(state, *args, **kwargs)
        snapshots.append([p.detach().clone() for p in [*state.net.parameters(), *state.ema.module.parameters()]])
        return out

    monkeypatch.setattr(train_loop, "train_step", step)
    return snapshots


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_bad_steps_are_skipped_and_counted(tmp_path, monkeypatch, grad_clip):
    bad = {3, 4, 9}
    poison_gradients(monkeypatch, bad)
    weights = record_weights(monkeypatch)
    result = train(TrainConfig(out=str(tmp_path), steps=12, log_every=1, checkpoint_every=100, grad_clip=grad_clip,
                               max_bad_steps=3, **TINY))
    assert result.stopped == "done" and result.step == 12
    records = log_records(tmp_path)
    assert [r["skipped"] for r in records] == [int(k in bad) for k in range(12)]
    assert all(("loss" in r) == (not r["skipped"]) for r in records)  # a skipped step's NaN is not logged
    for k in bad:  # the update of a bad step never happened, to the weights or to their EMA
        assert all(torch.equal(a, b) for a, b in zip(weights[k - 1], weights[k]))
    ck = checkpoint.load(result.checkpoint)
    assert checkpoint.nonfinite(ck.tensors) is None
    assert float(ck.tensors["optimizer"]["state.0.step"]) == 12 - len(bad)  # AdamW counted only good steps


def test_streak_stops_run_with_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    poison_loss(monkeypatch, first_bad=6)  # steps 6, 7, 8, ... have a NaN loss
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--steps", "30", "--max-bad-steps", "3", "--checkpoint-every", "5",
                 "--log-every", "100", *flags(TINY)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rediffuse: error: training stopped at step 10: 3 steps in a row"), err
    assert "ckpt-00000005" in err and "--max-bad-steps" in err
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt-00000005"]  # nothing saved after
    ck = checkpoint.load(checkpoint.latest(run))
    assert ck.step == 5 and checkpoint.nonfinite(ck.tensors) is None
    (record,) = log_records(run)  # the open window is logged before stopping
    assert record["step"] == 10 and record["skipped"] == 4 and math.isfinite(record["loss"])


def test_short_burst_below_the_limit_is_survived(tmp_path, monkeypatch):
    poison_gradients(monkeypatch, {5, 6})
    result = train(TrainConfig(out=str(tmp_path), steps=10, log_every=5, checkpoint_every=5, max_bad_steps=3, **TINY))
    assert result.stopped == "done"
    assert [r["skipped"] for r in log_records(tmp_path)] == [0, 2]


def test_limit_is_checked_at_every_log_step(tmp_path, monkeypatch):
    poison_gradients(monkeypatch, set(range(4, 100)))
    with pytest.raises(NonFiniteError, match="training stopped at step 6: 2 steps in a row"):
        train(TrainConfig(out=str(tmp_path), steps=20, log_every=1, checkpoint_every=3, max_bad_steps=2, **TINY))
    assert checkpoint.latest(tmp_path).name == "ckpt-00000003"


def test_save_refuses_nonfinite_tensors(tmp_path):
    good = {"model": {"w": torch.ones(3)}}
    checkpoint.save(tmp_path, 1, good, {})
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(CheckpointError, match=r"refusing to save the checkpoint of step 2: model\.w holds NaN"):
            checkpoint.save(tmp_path, 2, {"model": {"w": torch.tensor([1.0, value])}}, {}, keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-00000001"]  # nothing written or pruned
    checkpoint.save(tmp_path, 3, {"model": {"w": torch.tensor([math.nan])}}, {}, allow_nonfinite=True)


@pytest.mark.parametrize("name", ["points.npy", "images.npz"])
def test_nonfinite_training_data_is_refused(tmp_path, capsys, name):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]]))
    else:
        images = np.zeros((4, 1, 8, 8), np.float32)
        images[2, 0, 3, 3] = np.nan
        np.savez(path, images=images)
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "nan" in err.lower() and name in err, err
    assert not (tmp_path / "run").exists()
