"""Typed values between layers: ModelSpec and DataInfo round-trip a checkpoint's JSON exactly, and an
objective's draws slice per rank and compare like the dicts they replace."""

from __future__ import annotations

import json

import torch

from rediffuse import objectives
from rediffuse.config import TrainConfig
from rediffuse.core.spec import DataInfo, ModelSpec
from rediffuse.objectives.gaussian import GaussianDraws
from rediffuse.train import train


def test_a_checkpoints_model_description_round_trips_through_model_spec(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(data="moons", out=str(out), steps=1, batch_size=16, num_points=64, progress=False,
                      net_kwargs={"hidden": 8, "depth": 1, "emb_dim": 4}))
    stored = json.loads(next(out.glob("ckpt-*/manifest.json")).read_text())["meta"]["model"]
    spec = ModelSpec.from_dict(stored)
    assert spec.to_dict() == stored and spec.data == DataInfo("points", (2,), None, "moons")
    assert spec.net == "mlp" and spec["data"]["shape"] == [2] and "vocab" not in spec and spec.get("vocab") is None
    student = spec.replace(consistency={"sigma_min": 0.002, "mid_sigma": 0.8})
    assert ModelSpec.from_dict(json.loads(json.dumps(student.to_dict()))) == student
    pretrained = ModelSpec.from_dict({**stored, "format": "rediffuse-pretrained", "format_version": 1})
    assert pretrained.extra == {"format": "rediffuse-pretrained", "format_version": 1}
    assert pretrained.to_dict()["format"] == "rediffuse-pretrained"


def test_step_draws_slice_per_rank_and_read_like_the_old_dicts():
    draws = GaussianDraws(torch.arange(4.0), torch.ones(4, 2), None)
    half = objectives.base.take(draws, slice(2, 4))
    assert torch.equal(half.sigma, torch.tensor([2.0, 3.0])) and half.noise.shape == (2, 2) and half.drop is None
    assert list(draws) == ["sigma", "noise"] and "drop" not in draws and torch.equal(draws["sigma"], draws.sigma)
    assert draws == {"sigma": torch.arange(4.0), "noise": torch.ones(4, 2)} and draws != half
    assert objectives.base.take({"x": torch.arange(3)}, slice(0, 1)) == {"x": torch.tensor([0])}
