"""Objectives: the registry by name, the Gaussian objective's per-sample loss, and a new objective trained by the
unchanged loop (checkpoints, resume and run loading included)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rediffuse import objectives, runs
from rediffuse.core import losses
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import build_data
from rediffuse.errors import CheckpointError, ConfigError
from rediffuse.objectives import Batch
from rediffuse.train import train
from rediffuse.train.batches import StepStreams

TINY = dict(data="8gaussians", num_points=256, batch_size=32, warmup_steps=2, ema_decay=0.9, progress=False,
            log_every=2, checkpoint_every=3, net_kwargs={"hidden": 16, "depth": 2, "emb_dim": 8})


def test_objective_by_name_and_old_configs_load_as_gaussian():
    saved = TrainConfig().to_dict()
    del saved["objective"]  # written before objectives had names
    assert TrainConfig.from_dict(saved).objective == "gaussian"
    assert isinstance(objectives.get(TrainConfig()), objectives.Gaussian)
    with pytest.raises(ConfigError, match="unknown objective 'nope'; choose one of gaussian"):
        objectives.validate(TrainConfig(objective="nope"))
    with pytest.raises(ConfigError, match="unknown weighting 'w'"):
        objectives.validate(TrainConfig(weighting="w"))


def test_gaussian_loss_is_per_sample_and_its_mean_is_the_denoising_loss():
    config = TrainConfig(**TINY, conditional=False)
    objective = objectives.get(config)
    data = build_data(config)
    spec = objective.spec(data)
    torch.manual_seed(0)
    model = objective.model(spec, objective.build(spec))
    batch = Batch(data.x[:32])
    draws = objective.draw(model, batch, StepStreams(0, torch.device("cpu")).at(5))
    per_sample = objective.loss(model, batch, draws)
    assert per_sample.shape == (32,)
    whole = losses.denoising_loss(model, batch.x, draws["sigma"], draws["noise"], config.weighting, None,
                                  model.sigma_data, config.min_snr_gamma)
    assert torch.equal(per_sample.mean(), whole)
    again = objective.draw(model, batch, StepStreams(0, torch.device("cpu")).at(5))
    assert all(torch.equal(draws[k], again[k]) for k in draws)  # a pure function of (seed, step)


class Shift:
    """A toy objective: learn to undo a random shift of the data (no schedule, no sigma)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def check(self) -> None:
        """Nothing of its own to check."""

    def spec(self, data) -> dict:
        """The data's dimension."""
        return {"dim": data.shape[0]}

    def build(self, spec: dict) -> nn.Module:
        """A linear map."""
        return nn.Linear(spec["dim"], spec["dim"])

    def model(self, spec: dict, net: nn.Module) -> nn.Module:
        """The network itself."""
        return net

    def draw(self, model: nn.Module, batch: Batch, generators) -> dict:
        """A shift per example."""
        return {"shift": torch.randn(batch.x.shape, generator=generators.device("shift"))}

    def loss(self, model: nn.Module, batch: Batch, draws: dict) -> torch.Tensor:
        """Squared error of the unshifted examples."""
        return (model(batch.x + draws["shift"]) - batch.x).pow(2).mean(1)

    def preview(self, model, spec, path, device):
        """No picture."""
        return None


def test_a_new_objective_trains_resumes_and_loads_with_the_same_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(objectives.OBJECTIVES, "shift", Shift)
    config = dict(TINY, objective="shift", out=str(tmp_path / "run"), sample_every=2)
    first = train(TrainConfig(**config, steps=4))
    assert (first.stopped, first.step) == ("done", 4)
    whole = train(TrainConfig(**{**config, "out": str(tmp_path / "whole")}, steps=8))
    resumed = train(TrainConfig(**config, steps=8), resume=True)
    assert resumed.step == whole.step == 8
    model, spec, saved = runs.load_model(tmp_path / "run")
    reference, _, _ = runs.load_model(tmp_path / "whole")
    assert spec == {"dim": 2} and saved.objective == "shift" and isinstance(model, nn.Linear)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    with pytest.raises(CheckpointError, match="not a Gaussian denoiser"):
        runs.load_run(tmp_path / "run")
