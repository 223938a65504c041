"""The masked objective trained by the unchanged loop on text: data, windows, learning, exact resume, eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rediffuse import checkpoint, objectives, runs
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import build_data
from rediffuse.errors import ConfigError
from rediffuse.data.text import load_text
from rediffuse.evaluation.text import evaluate_text, heldout_spec, nelbo_report
from rediffuse.objectives import MaskedLM
from rediffuse.train import train
from rediffuse.distributed import SINGLE
from rediffuse.train.batches import StepBatches
from helpers import markov_text, tiny

CPU = torch.device("cpu")


def test_text_data_windows_and_draws_are_functions_of_seed_and_step(tmp_path):
    config = tiny(tmp_path)
    data = build_data(config)
    assert data.kind == "text" and data.x.dtype == torch.long and len(data.x) == 5400
    assert data.vocab.chars == "abcd" and data.text.num_chars == 5400
    objective = objectives.get(config)
    spec = objective.spec(data)
    assert spec["vocab"]["chars"] == "abcd" and spec["mask_id"] == 4 and spec["data"]["shape"] == [32]
    model = objective.model(spec, objective.build(spec))
    assert isinstance(model, MaskedLM) and model.time_agnostic
    first, again = (StepBatches(data, config, objective, CPU, SINGLE).get(7, model) for _ in range(2))
    assert first[0].x.shape == (32, 32) and torch.equal(first[0].x, again[0].x)
    assert all(torch.equal(first[1][k], again[1][k]) for k in ("t", "z"))
    other = StepBatches(data, config, objective, CPU, SINGLE).get(8, model)
    assert not torch.equal(first[0].x, other[0].x)
    masked_out = first[1]["z"] == 4
    assert torch.equal(first[1]["z"][~masked_out], first[0].x[~masked_out])
    loss = objective.loss(model, first[0], first[1])
    assert loss.shape == (32,) and bool(torch.isfinite(loss).all())


def test_bad_masked_configs_are_one_line_errors(tmp_path):
    for overrides, match in [({"mask_schedule": "linear"}, "unknown mask_schedule 'linear'"),
                             ({"net": "mlp"}, "trains a transformer"),
                             ({"data": "moons"}, "trains on text"),
                             ({"tokens": "words"}, "unknown tokens 'words'"),
                             ({"block_length": 0}, "block_length must be a positive integer")]:
        with pytest.raises(ConfigError, match=match) as err:
            objectives.validate(tiny(tmp_path, **overrides))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="trains with --objective masked"):
        objectives.validate(tiny(tmp_path, objective="gaussian"))
    with pytest.raises(ConfigError, match="fewer than block_length 9000"):
        train(tiny(tmp_path, block_length=9000, net_kwargs={"dim": 32, "depth": 1, "heads": 2}, steps=1))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_small_transformer_learns_below_the_unigram_entropy(tmp_path):
    config = tiny(tmp_path)
    _, unigram_bits = markov_text(tmp_path / "m.txt")
    result = train(config)
    assert result.stopped == "done" and result.step == 300
    report = evaluate_text(config.out, draws=4)
    assert report["tokens"] == 18 * 32 and report["windows"] == 18
    assert report["nelbo_bits_per_char"] + 3 * report["nelbo_bits_per_char_stderr"] < unigram_bits  # ~0.97 < 1.99
    saved = json.loads((Path(config.out) / "eval" / "eval.json").read_text())
    assert saved["nelbo_bits_per_char"] == pytest.approx(report["nelbo_bits_per_char"])
    assert "bits/char" in (Path(config.out) / "eval" / "eval.md").read_text()


def test_masked_resume_equals_uninterrupted(tmp_path):
    base = dict(steps=8, log_every=2, checkpoint_every=3, warmup_steps=2, sample_every=4,
                net_kwargs={"dim": 16, "depth": 1, "heads": 2, "dropout": 0.1})
    whole = train(tiny(tmp_path, **base, out=str(tmp_path / "whole")))
    train(tiny(tmp_path, **{**base, "steps": 4}, out=str(tmp_path / "split")))
    split = train(tiny(tmp_path, **base, out=str(tmp_path / "split")), resume=True)
    assert whole.step == split.step == 8
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / name)) for name in ("whole", "split"))
    for part in ("model", "ema", "optimizer"):
        assert a.tensors[part].keys() == b.tensors[part].keys()
        assert all(torch.equal(v, b.tensors[part][k]) for k, v in a.tensors[part].items()), part
    assert (tmp_path / "split" / "samples" / "step-00000008.txt").read_text().count("\n=====\n") == 3
    model, spec, saved = runs.load_model(tmp_path / "split")
    assert isinstance(model, MaskedLM) and saved.objective == "masked" and spec["vocab"]["chars"] == "abcd"


def test_points_batches_are_unchanged_by_text_support():
    config = TrainConfig(data="8gaussians", num_points=64, batch_size=16, net_kwargs={"hidden": 8})
    data = build_data(config)
    assert data.kind == "points" and data.text is None and data.vocab is None
    objective = objectives.get(config)
    spec = objective.spec(data)
    model = objective.model(spec, objective.build(spec))
    batches = StepBatches(data, config, objective, CPU, SINGLE)
    batch, draws = batches.get(5, model)
    assert torch.equal(batch.x, data.x[batches.order.indices(5)]) and set(draws) == {"sigma", "noise"}


def test_bytes_tokens_report_bits_per_character(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("caf\u00e9 na\u00efve " * 40)  # 2 of every 11 characters take two bytes
    part = load_text(heldout_spec(f"text:{path}@train"), tokens="bytes")
    assert part.vocab.kind == "bytes" and len(part.tokens) == part.num_chars * 13 // 11
    estimates = torch.full((2, len(part.tokens) // 8), math.log(2), dtype=torch.float64)  # 1 bit per byte
    report = nelbo_report(estimates, part, 8)
    assert report["nelbo_bits_per_char"] == pytest.approx(13 / 11) and report["token_kind"] == "bytes"
    assert report["nelbo_bits_per_char_stderr"] == 0.0
    with pytest.raises(ValueError, match="has no held-out part"):
        heldout_spec(f"text:{path}")


@pytest.mark.parametrize("schedule", ["log-linear", "cosine"])
def test_time_conditioned_and_cosine_runs_train_and_sample(tmp_path, schedule):
    config = tiny(tmp_path, steps=6, log_every=3, mask_schedule=schedule,
                  net_kwargs={"dim": 16, "depth": 1, "heads": 2, "time_conditioning": True, "time_dim": 8})
    assert train(config).step == 6
    model, spec, _ = runs.load_model(config.out)
    assert not model.time_agnostic and model.schedule.kind == schedule == spec["schedule"]["kind"]
    z = torch.full((2, 32), model.mask_id)
    log_probs = model(z, torch.full((2,), 0.5, dtype=torch.float64))
    assert log_probs.shape == (2, 32, 4) and torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 32))
