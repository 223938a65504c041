"""N steps + resume N steps equals 2N uninterrupted steps, bit for bit on CPU (weights, EMA, optimizer, RNG)."""

import json
import signal

import pytest

from rediffuse import checkpoint
from rediffuse.train import loop as train_loop
from rediffuse.config import TrainConfig
from rediffuse.errors import ConfigError
from rediffuse.train import train
from rediffuse.train.clock import TickClock
from helpers import POINTS, assert_same_state

N = 12


def _log_steps(run):
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_resume_equals_uninterrupted_points(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(TrainConfig(out=str(whole), steps=2 * N, **POINTS))
    first = train(TrainConfig(out=str(split), steps=N, **POINTS))
    assert first.step == N and first.stopped == "done"
    second = train(TrainConfig(out=str(split), steps=2 * N, **POINTS), resume=True)
    assert second.step == 2 * N
    assert_same_state(whole, split)
    assert _log_steps(whole) == _log_steps(split) == [4, 8, 12, 16, 20, 24]
    assert (split / "loss.png").is_file()


def test_ctrl_c_saves_and_resumes_exactly(tmp_path, monkeypatch):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(TrainConfig(out=str(whole), steps=2 * N, **POINTS))
    real_step = train_loop.train_step
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs as a background job

    def interrupted_step(state, *args, **kwargs):
        out = real_step(state, *args, **kwargs)
        if state.step == 7:
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C in the middle of the run
        return out

    monkeypatch.setattr(train_loop, "train_step", interrupted_step)
    result = train(TrainConfig(out=str(split), steps=2 * N, **POINTS))
    assert result.stopped == "interrupted" and result.step == 7
    assert checkpoint.latest(split).name == "ckpt-00000007"
    assert signal.getsignal(signal.SIGINT) == handler_before  # the caller's handler restored
    monkeypatch.setattr(train_loop, "train_step", real_step)
    train(TrainConfig(out=str(split), steps=2 * N, **POINTS), resume=True)
    assert_same_state(whole, split)
    assert _log_steps(split) == [4, 7, 8, 12, 16, 20, 24]  # a partial window at the interruption, then on


def test_time_budget_stops_with_checkpoint(tmp_path):
    result = train(TrainConfig(out=str(tmp_path), steps=10_000, minutes=1e-6, **POINTS), clock=TickClock(1e-5))
    assert result.stopped == "time" and 1 <= result.step < 10_000
    assert checkpoint.latest(tmp_path) == result.checkpoint


def test_refuses_to_overwrite_or_change_a_run(tmp_path):
    train(TrainConfig(out=str(tmp_path), steps=2, **POINTS))
    with pytest.raises(ConfigError, match="--resume"):
        train(TrainConfig(out=str(tmp_path), steps=4, **POINTS))
    with pytest.raises(ConfigError, match="different seed"):
        train(TrainConfig(out=str(tmp_path), steps=4, **{**POINTS, "seed": 1}), resume=True)
    done = train(TrainConfig(out=str(tmp_path), steps=2, **POINTS), resume=True)  # nothing left to do
    assert done.step == 2 and done.checkpoint.name == "ckpt-00000002"


def test_resume_equals_uninterrupted_unet_digits(tmp_path):
    pytest.importorskip("rediffuse.data.images")
    pytest.importorskip("sklearn")
    cfg = dict(data="digits", conditional=True, label_dropout=0.2, batch_size=16, warmup_steps=2, log_every=2,
               checkpoint_every=100, ema_decay=0.9, progress=False,
               net_kwargs={"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "mid_attention": False,
                           "dropout": 0.1})
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(TrainConfig(out=str(whole), steps=4, **cfg))
    train(TrainConfig(out=str(split), steps=2, **cfg))
    train(TrainConfig(out=str(split), steps=4, **cfg), resume=True)
    assert_same_state(whole, split)
