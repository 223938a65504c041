"""The autoregressive baseline trained by the unchanged loop: it learns, its NLL is exact, resume, no leakage."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rediffuse import checkpoint, objectives, runs
from rediffuse.cli.app import main
from rediffuse.data.dataset import build_data
from rediffuse.evaluation.text import evaluate_text
from rediffuse.objectives import CausalLM
from rediffuse.train import train
from helpers import markov_text, tiny


def ar(tmp_path: Path, **overrides):
    """A tiny autoregressive run on the Markov text of the masked tests."""
    return tiny(tmp_path, **{"objective": "autoregressive", **overrides})


def fresh_model(config) -> tuple[CausalLM, dict]:
    objective = objectives.get(config)
    spec = objective.spec(build_data(config))
    return objective.model(spec, objective.build(spec)), spec


def test_spec_is_causal_with_a_bos_token_and_draws_nothing(tmp_path):
    config = ar(tmp_path, net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    model, spec = fresh_model(config)
    assert spec["net_config"]["causal"] and spec["bos_id"] == 4 and "schedule" not in spec
    x = torch.randint(0, 4, (3, 32))
    assert objectives.get(config).draw(model, objectives.Batch(x), None) == {}
    log_probs = model(x)
    assert log_probs.shape == (3, 32, 4) and torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 32))


def test_changing_future_tokens_leaves_earlier_predictions_unchanged(tmp_path):
    torch.manual_seed(0)
    model, _ = fresh_model(ar(tmp_path, net_kwargs={"dim": 16, "depth": 2, "heads": 2}))
    x = torch.randint(0, 4, (2, 32))
    y = x.clone()
    y[:, 20:] = (y[:, 20:] + 1) % 4
    a, b = model(x), model(y)
    assert torch.equal(a[:, :21], b[:, :21])  # position 20 predicts x_20 from x_<20
    assert not torch.allclose(a[:, 21:], b[:, 21:])


def test_ar_learns_below_the_unigram_entropy_and_eval_reports_exact_nll(tmp_path):
    config = ar(tmp_path)
    _, unigram_bits = markov_text(tmp_path / "m.txt")
    assert train(config).step == 300
    report = evaluate_text(config.out)
    assert report["windows"] == 18 and report["nll_bits_per_char"] < unigram_bits - 0.5  # ~1.0 < 1.99
    assert report["settings"]["metrics"] == ["nll"] and report["draws_per_window"] == 1
    assert report == evaluate_text(config.out)  # exact: no Monte Carlo
    assert "exact NLL" in (Path(config.out) / "eval" / "eval.md").read_text()


def test_exact_nll_of_a_periodic_text_goes_near_zero(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("abcde" * 800)
    config = ar(tmp_path, data=f"text:{path}@train", steps=150, lr=3e-3)
    train(config)
    report = evaluate_text(config.out)
    # the first token of each window is a guess among 5 (log2 5 / 32 = 0.073 bits/char); the rest is determined
    assert report["nll_bits_per_char"] < 0.12


def test_ar_resume_equals_uninterrupted(tmp_path):
    base = dict(steps=8, log_every=2, checkpoint_every=3, warmup_steps=2, sample_every=4,
                net_kwargs={"dim": 16, "depth": 1, "heads": 2, "dropout": 0.1})
    train(ar(tmp_path, **base, out=str(tmp_path / "whole")))
    train(ar(tmp_path, **{**base, "steps": 4}, out=str(tmp_path / "split")))
    assert train(ar(tmp_path, **base, out=str(tmp_path / "split")), resume=True).step == 8
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / name)) for name in ("whole", "split"))
    for part in ("model", "ema", "optimizer"):
        assert all(torch.equal(v, b.tensors[part][k]) for k, v in a.tensors[part].items()), part
    assert (tmp_path / "split" / "samples" / "step-00000008.txt").read_text().count("\n=====\n") == 3
    model, _, saved = runs.load_model(tmp_path / "split")
    assert isinstance(model, CausalLM) and saved.objective == "autoregressive"


def test_cli_samples_left_to_right_with_prompt_and_seeds(tmp_path, capsys):
    config = ar(tmp_path, steps=4, net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    train(config)
    out, again = tmp_path / "s.jsonl", tmp_path / "t.jsonl"
    assert main(["sample", config.out, "-n", "3", "--length", "12", "--prompt", "abc", "--seed", "5",
                 "--out", str(out)]) == 0
    assert main(["sample", config.out, "-n", "2", "--length", "12", "--prompt", "abc", "--seed", "5",
                 "--batch-size", "1", "--out", str(again)]) == 0
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert all(len(t) == 12 and t.startswith("abc") and set(t) <= set("abcd") for t in texts)
    assert texts[:2] == [json.loads(line)["text"] for line in again.read_text().splitlines()]
    assert main(["sample", config.out, "--infill", "a__b", "--out", str(out)]) == 2
    assert "--infill is for masked-diffusion runs" in capsys.readouterr().err
    assert main(["eval", config.out, "--metrics", "nll"]) == 0
    assert "exact NLL" in capsys.readouterr().out


def test_nll_metric_on_a_masked_run_is_a_one_line_error(tmp_path, capsys):
    config = tiny(tmp_path, steps=2, net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    train(config)
    assert main(["eval", config.out, "--metrics", "nll"]) == 2
    assert "needs an autoregressive run" in capsys.readouterr().err


def test_left_to_right_sampler_reproduces_a_known_chain_and_keeps_the_prompt():
    from rediffuse.samplers.autoregressive import sample_autoregressive
    from rediffuse.samplers.generation import sample_generators
    transition = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], dtype=torch.float64)

    def chain(x):  # position l's distribution given x_<l: a first-order chain started at token 0
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        return transition.log()[prev].float()

    z = torch.zeros((4000, 3), dtype=torch.long)
    z[:, 0] = 1
    x = sample_autoregressive(chain, z, 1, generator=sample_generators(0, range(4000), "cpu"))
    assert bool((x[:, 0] == 1).all())
    pairs = torch.bincount(x[:, 1] * 3 + x[:, 2], minlength=9).double().reshape(3, 3) / 4000
    expected = transition[1].unsqueeze(1) * transition
    assert torch.allclose(pairs, expected, atol=0.03)  # 4000 draws: s.e. <= 0.008
