"""Named recipes, the time budget (total over resumes) and timed checkpoints."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from rediffuse import checkpoint
from rediffuse.samplers import generation as sampling
from rediffuse.cli import main
from rediffuse.presets import PRESETS, SAMPLING, preset
from rediffuse.config import TrainConfig
from rediffuse.objectives import validate
from rediffuse.runs import load_run
from rediffuse.train import learning_rate, train
from rediffuse.train.clock import Clock, TickClock

SMALL_MNIST = dict(data="digits@train", image_size=28, progress=False)  # 28x28 grey digits with labels


def test_every_preset_is_a_valid_config_with_sampling_settings():
    needs_data = {"autoregressive": "text:input.txt@train"}  # presets of other objectives name no data of theirs
    for name in PRESETS:
        values = preset(name)
        validate(TrainConfig.from_dict({**values, "data": needs_data.get(values.get("objective"),
                                                                          values.get("data", "moons"))}))
        assert set(SAMPLING[name]) >= {"sampler", "steps"}
    with pytest.raises(ValueError, match="unknown preset 'nope'; choose one of"):
        preset("nope")


def test_preset_returns_a_copy():
    preset("mnist-fast")["net_kwargs"]["channels"] = 1
    assert PRESETS["mnist-fast"]["net_kwargs"]["channels"] != 1


def test_mnist_fast_trains_end_to_end_and_samples(tmp_path):
    config = TrainConfig.from_dict({**preset("mnist-fast"), **SMALL_MNIST, "out": str(tmp_path / "run"),
                                    "steps": 24, "batch_size": 16, "warmup_steps": 4})
    result = train(config)
    assert (result.stopped, result.step) == ("done", 24)
    denoiser, schedule, _ = load_run(tmp_path / "run")
    options = {**SAMPLING["mnist-fast"], "steps": 4}
    x = sampling.generate(denoiser, schedule, (1, 28, 28), n=10, cond=torch.arange(10), **options)
    assert x.shape == (10, 1, 28, 28) and torch.isfinite(x).all()


def test_time_budget_stops_cleanly_counting_earlier_sessions(tmp_path):
    values = {**preset("mnist-fast"), **SMALL_MNIST, "out": str(tmp_path / "run"), "batch_size": 8,
              "minutes": 0.03, "checkpoint_minutes": None}
    result = train(TrainConfig.from_dict(values), clock=TickClock(0.05))  # each clock reading: 0.05 s later
    assert result.stopped == "time" and result.step > 0
    elapsed = checkpoint.read_manifest(result.checkpoint)["meta"]["elapsed"]
    assert 1.8 <= elapsed < 30
    load_run(tmp_path / "run")  # the checkpoint loads
    again = train(TrainConfig.from_dict(values), resume=True, clock=TickClock(0.05))  # spent: no new step
    assert (again.stopped, again.step) == ("time", result.step)


def scripted(*readings: float):
    """A clock that returns the given readings, one per call."""
    return iter(readings).__next__


def test_clock_budget_and_timed_saves_follow_the_clock():
    state = SimpleNamespace(elapsed=0.0)  # budget 2.4 s, a timed save every 0.6 s
    clock = Clock(state, minutes=0.04, every_minutes=0.01, now=scripted(0.0, 0.55, 0.65, 0.7, 1.9, 2.35, 2.45))
    assert [clock.save_due() for _ in range(4)] == [False, True, False, True]  # each interval's save due once
    assert clock.next_save == pytest.approx(2.4)  # 1.9 s skipped the save of 1.2 s: the next is at 2.4 s
    assert (clock.out_of_time(), clock.out_of_time()) == (False, True) and state.elapsed == pytest.approx(2.45)
    resumed = SimpleNamespace(elapsed=1.0)  # a second session continues the run's time
    clock = Clock(resumed, minutes=0.04, every_minutes=0.01, now=scripted(5.0, 5.15, 5.25, 6.35, 6.45))
    assert (clock.save_due(), clock.save_due()) == (False, True) and resumed.elapsed == pytest.approx(1.25)
    assert (clock.out_of_time(), clock.out_of_time()) == (False, True)
    assert not Clock(state, None, None, now=scripted(0.0, 1e9, 1e9)).out_of_time()  # no budget
    tick = TickClock(0.25)
    assert [tick() for _ in range(3)] == [0.0, 0.25, 0.5]


def test_timed_checkpoints(tmp_path):
    values = {**preset("mnist-fast"), **SMALL_MNIST, "out": str(tmp_path / "run"), "batch_size": 8,
              "minutes": 0.04, "checkpoint_minutes": 0.01, "keep_last": 100}
    result = train(TrainConfig.from_dict(values), clock=TickClock(0.02))  # each clock reading: 0.02 s later
    saved = checkpoint.list_checkpoints(tmp_path / "run")
    assert saved[-1] == result.checkpoint and len(saved) >= 3
    timed = [checkpoint.read_manifest(p)["meta"]["elapsed"] for p in saved[:-1]]  # the last: at the budget
    assert all(b - a >= 0.5 for a, b in zip(timed, timed[1:]))  # one per 0.6-second interval, not per step
    assert all(t >= 0.6 * (i + 1) for i, t in enumerate(timed))


def test_cosine_learning_rate_follows_the_time_budget():
    config = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=0, steps=1_000_000, minutes=10.0)
    assert learning_rate(config, 5, elapsed=0.0) == pytest.approx(1.0, abs=1e-5)
    assert learning_rate(config, 5, elapsed=300.0) == pytest.approx(0.5)
    assert learning_rate(config, 5, elapsed=600.0) == pytest.approx(0.0, abs=1e-12)
    by_steps = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=0, steps=100, minutes=10.0)
    assert learning_rate(by_steps, 50, elapsed=1.0) == pytest.approx(0.5)  # the steps end first
    constant = TrainConfig(lr=1.0, warmup_steps=0, minutes=10.0)
    assert learning_rate(constant, 5, elapsed=590.0) == 1.0
    assert math.isclose(learning_rate(TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=0, steps=10), 5), 0.5)


def test_cli_train_with_preset(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--preset", "mnist-fast", "--data", "digits@train", "--image-size", "28", "--steps", "3",
                 "--batch-size", "8", "--out", str(out), "--no-progress"])
    assert code == 0 and "finished at step 3" in capsys.readouterr().out
    assert TrainConfig.from_dict(checkpoint.read_manifest(checkpoint.latest(out))["meta"]["train_config"]).lr == \
        PRESETS["mnist-fast"]["lr"]
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_shakespeare_char_trains_end_to_end_and_samples(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    run = tmp_path / "run"
    code = main(["train", "--preset", "shakespeare-char", "--data", f"text:{text}@train", "--out", str(run),
                 "--steps", "6", "--minutes", "5", "--block-length", "32", "--no-progress",
                 "--net-kwargs", '{"dim": 16, "depth": 1, "heads": 2}'])
    assert code == 0
    config = checkpoint.read_manifest(checkpoint.latest(run))["meta"]["train_config"]
    assert (config["objective"], config["lr"], config["batch_size"]) == ("autoregressive", 1e-3, 16)
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(run), "-n", "2", "--out", str(out)]) == 0
    assert all(len(json.loads(line)["text"]) == 32 for line in out.read_text().splitlines())
