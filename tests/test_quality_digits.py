"""Quality: a short class-conditional training run on digits makes samples the classifier labels correctly."""

import pytest
import torch

from rediffuse.samplers import generation as sampling
from rediffuse.presets import PRESETS as DEMOS
from rediffuse.evaluation.features import classify, load_or_train_classifier
from rediffuse.config import TrainConfig
from rediffuse.runs import load_run
from rediffuse.train import train


@pytest.mark.slow
def test_conditional_digit_samples_are_recognised(tmp_path):
    config = TrainConfig.from_dict({**DEMOS["digits"], "steps": 800, "out": str(tmp_path / "run"),
                                    "progress": False})
    train(config)
    denoiser, schedule, _ = load_run(tmp_path / "run")
    cond = torch.arange(300) % 10
    x = sampling.generate(denoiser, schedule, (1, 8, 8), n=300, sampler="heun", steps=18, cond=cond, seed=0)
    classifier, _ = load_or_train_classifier("digits")
    acc = float((classify(classifier, x.clamp(-1, 1)) == cond).float().mean())
    print(f"class accuracy of 300 unguided samples after 800 steps: {acc:.3f}")
    assert acc >= 0.80
