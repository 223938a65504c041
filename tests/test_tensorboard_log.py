"""`--log tensorboard`: the log records' numbers as TensorBoard scalars, and a one-line error without the package."""

from __future__ import annotations

import importlib.util
import json

import pytest

import rediffuse
from rediffuse.cli import main
from helpers import SMALL, assert_one_line_error, images


def test_tensorboard_scalars_equal_the_jsonl_records(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = rediffuse.fit(images(), tmp_path / "r", log="tensorboard", **{**SMALL, "steps": 6})
    records = [json.loads(line) for line in (run.path / "log.jsonl").read_text().splitlines()]
    records = [r for r in records if "loss" in r]
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in records] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)  # float32 in events
    assert {"train/lr", "train/samples_per_s"} <= set(events.Tags()["scalars"])


def test_without_the_package_the_flag_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code = main(["train", "--data", "moons", "--steps", "2", "--log", "tensorboard", "--out", str(tmp_path / "r")])
    assert_one_line_error(capsys, code, 2, "--log tensorboard needs the tensorboard package; pip install")
    assert not (tmp_path / "r").exists()
    code = main(["train", "--data", "moons", "--steps", "2", "--log", "wandb", "--out", str(tmp_path / "r")])
    assert_one_line_error(capsys, code, 2, "unknown log 'wandb'; choose one of jsonl, tensorboard")
