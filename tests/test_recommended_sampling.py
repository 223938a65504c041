"""A run's recommended sampling (the `sampling` key a preset fills): flags first, then the recommendation, then
the default; `rediffuse sample` and `Run.sample` draw with it and say so."""

from __future__ import annotations

import json

import pytest
import torch

from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.core.spec import DataInfo, ModelSpec
from rediffuse.errors import ConfigError, UsageError
from rediffuse.presets import PRESETS, RECOMMENDED, SAMPLING, preset
from rediffuse.recommended import choose
from rediffuse.sampling.run import load
from rediffuse.serve.server import Limits, describe_run

ADVICE = {"sampler": "euler-ancestral", "steps": 18, "guidance": 2.0}


def spec(classes: int | None = 10, consistency: dict | None = None) -> ModelSpec:
    """A Gaussian image run's spec (only what the choice reads matters)."""
    return ModelSpec(net="unet", net_config={}, data=DataInfo(kind="images", shape=(1, 8, 8), num_classes=classes),
                     consistency=consistency)


def test_the_recommendation_fills_only_what_the_caller_left_out():
    plain = choose(spec(), {}, default_steps=20)
    assert (plain.sampler, plain.steps, plain.spacing, plain.guidance, plain.recommended) == \
        ("heun", 20, "default", 1.0, ())
    advised = choose(spec(), ADVICE)
    assert (advised.sampler, advised.steps, advised.guidance) == ("euler-ancestral", 18, 2.0)
    assert advised.recommended == ("sampler", "steps", "guidance")
    assert "the run's recommended sampling" in advised.describe()
    other = choose(spec(), ADVICE, sampler="heun", default_steps=20)  # its steps belong to its own sampler
    assert (other.sampler, other.steps, other.guidance, other.recommended) == ("heun", 20, 2.0, ("guidance",))
    given = choose(spec(), ADVICE, steps=5, guidance=1.0)
    assert (given.sampler, given.steps, given.guidance, given.recommended) == ("euler-ancestral", 5, 1.0,
                                                                                ("sampler",))
    assert choose(spec(classes=None), ADVICE).guidance == 1.0  # an unconditional run has nothing to guide
    student = choose(spec(consistency={"mid_sigma": 1.0}), ADVICE)  # a student ignores its teacher's advice
    assert (student.sampler, student.steps, student.guidance, student.recommended) == ("consistency", 2, 1.0, ())


def test_eta_comes_with_its_own_sampler_and_only_a_sampler_that_takes_it():
    advice = {"sampler": "dpmpp-2m-sde", "steps": 18, "guidance": 2.0, "eta": 0.25}
    advised = choose(spec(), advice)
    assert advised.eta == 0.25 and "eta" in advised.recommended and "eta 0.25" in advised.describe()
    assert choose(spec(), advice, eta=0.5).eta == 0.5  # the caller's value first
    assert choose(spec(), advice, sampler="euler-ancestral").eta is None  # another sampler keeps its own noise
    assert choose(spec(), ADVICE).eta is None  # no recommendation: the sampler's default
    with pytest.raises(UsageError, match="sampler 'heun' takes none: drop --eta"):
        choose(spec(), advice, sampler="heun", eta=0.5)
    with pytest.raises(UsageError, match="--eta must be between 0"):
        choose(spec(), advice, eta=2.0)


def test_presets_carry_their_measured_sampling_and_bad_tables_are_named():
    assert preset("fsdd-fast")["sampling"] == {k: v for k, v in SAMPLING["fsdd-fast"].items() if k in RECOMMENDED}
    assert "guidance" in preset("fsdd-fast")["sampling"] and "seed" not in preset("fsdd-fast")["sampling"]
    assert "sampling" not in preset("shakespeare-char")  # a text run samples with its own defaults
    assert "sampling" not in PRESETS["fsdd-fast"]  # the table itself is not changed
    for bad, message in (({"sampler": "nope"}, "unknown sampling.sampler 'nope'"),
                         ({"steps": 0}, "sampling.steps must be an integer >= 1"),
                         ({"guidance": -1.0}, "sampling.guidance must be a finite number >= 0"),
                         ({"spacing": "odd"}, "unknown sampling.spacing 'odd'"),
                         ({"sampler": "dpmpp-2m-sde", "eta": 1.5}, "sampling.eta must be a number between 0 and 1"),
                         ({"sampler": "heun", "eta": 0.5}, "sampling.eta needs a sampler that takes it"),
                         ({"sigma": 1}, "unknown sampling key 'sigma'")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(sampling=bad).check()


def test_sample_draws_with_the_runs_recommendation_and_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    advice = {"sampler": "euler-ancestral", "steps": 3, "guidance": 2.0, "eta": 0.5}
    assert main(["train", "--preset", "mnist-fast", "--data", "digits@train", "--image-size", "28", "--steps", "3",
                 "--batch-size", "8", "--out", str(run), "--no-progress", "--sampling", json.dumps(advice)]) == 0
    capsys.readouterr()
    model = load(run, device="cpu")
    recommended = model.sample(4, cond=3, seed=1)
    explicit = model.sample(4, cond=3, seed=1, **advice)
    assert torch.equal(recommended, explicit)
    assert not torch.equal(recommended, model.sample(4, cond=3, seed=1, guidance=1.0))
    assert not torch.equal(recommended, model.sample(4, cond=3, seed=1, eta=1.0))  # the recommended eta is used
    assert main(["sample", str(run), "-n", "2", "--class", "3", "--out", str(tmp_path / "s.png"),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "euler-ancestral, 3 steps, guidance 2, eta 0.5 (sampler, steps, guidance, eta: the run's recommended" in err
    assert main(["sample", str(run), "-n", "2", "--class", "3", "--steps", "4", "--guidance", "1",
                 "--out", str(tmp_path / "t.png"), "--no-progress"]) == 0
    assert "euler-ancestral, 4 steps, eta 0.5 (sampler, eta: the run's recommended" in capsys.readouterr().err
    listed = describe_run(0, "run", model, Limits())  # the local page starts from the same settings
    assert listed["default"] == {"sampler": "euler-ancestral", "steps": 3, "guidance": 2.0}
