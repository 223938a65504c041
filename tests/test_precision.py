"""Precision: fp32 is the CPU default, bf16 autocast trains, fp16 needs CUDA, and the fp16 loss scale (run here on
the CPU in fp32) leaves the update exact, skips overflowing steps and halves its scale."""

from __future__ import annotations

import torch

from rediffuse import objectives
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import build_data
from rediffuse.distributed import SINGLE
from rediffuse.train import train
from rediffuse.train.batches import StepBatches
from rediffuse.train.loop import train_step
from rediffuse.train.state import new_state
from helpers import POINTS, assert_one_line_error, assert_same_state, final_checkpoint


def test_auto_is_fp32_on_the_cpu_and_bf16_autocast_trains(tmp_path):
    train(TrainConfig(out=str(tmp_path / "auto"), steps=6, **POINTS))
    train(TrainConfig(out=str(tmp_path / "fp32"), steps=6, precision="fp32", **POINTS))
    assert_same_state(tmp_path / "auto", tmp_path / "fp32")
    result = train(TrainConfig(out=str(tmp_path / "bf16"), steps=6, precision="bf16", **POINTS))
    weights = final_checkpoint(result.out).tensors["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert any(not torch.equal(w, final_checkpoint(tmp_path / "fp32").tensors["model"][k]) for k, w in weights.items())


def test_fp16_on_the_cpu_and_unknown_precisions_are_one_line_errors(tmp_path, capsys):
    base = ["train", "--data", "moons", "--steps", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    assert_one_line_error(capsys, main([*base, "--precision", "fp16", "--device", "cpu"]), 2,
                          "precision fp16 needs a CUDA device")
    assert_one_line_error(capsys, main([*base, "--precision", "fp8"]), 2, "unknown precision 'fp8'")
    if not torch.cuda.is_available():
        assert_one_line_error(capsys, main([*base, "--device", "cuda"]), 2, "CUDA is not available here")


def _state_and_batch(config: TrainConfig, scaler: torch.amp.GradScaler | None):
    objective = objectives.get(config)
    data = build_data(config)
    state = new_state(config, objective, objective.spec(data), torch.device("cpu"))
    state.scaler = scaler
    batch, draws = StepBatches(data, config, objective, torch.device("cpu"), SINGLE).get(0, state.model)
    return objective, state, batch, draws


def test_the_loss_scale_leaves_the_update_exact_and_skips_overflow(tmp_path):
    config = TrainConfig(out=str(tmp_path / "x"), steps=4, **POINTS)
    objective, plain, batch, draws = _state_and_batch(config, None)
    _, scaled, _, _ = _state_and_batch(config, torch.amp.GradScaler("cpu", init_scale=2.0**10))
    train_step(plain, objective, batch, draws, 1e-3, config)
    train_step(scaled, objective, batch, draws, 1e-3, config)
    for a, b in zip(plain.net.parameters(), scaled.net.parameters()):
        assert torch.equal(a, b)  # a power-of-two scale and its inverse are exact
    before = [p.detach().clone() for p in scaled.net.parameters()]
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # overflows the gradient
    _, _, bad = train_step(scaled, objective, batch, draws, 1e-3, config)
    assert float(bad) == 1.0 and scaled.scaler.get_scale() == 2.0**126
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.net.parameters()))  # the step was skipped
