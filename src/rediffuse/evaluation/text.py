"""Evaluating a text run: the held-out NELBO of masked diffusion (or the exact NLL of an autoregressive run) in
bits per character, with its standard error.

The held-out part is cut into consecutive windows of the run's block length (a shorter tail is left out);
each window gets `draws` Monte Carlo estimates of its NELBO (the model's `nelbo`: `core.masking`, or
`core.block_diffusion` for block diffusion; times stratified over each batch of windows), so the mean is an
unbiased estimate of the bound in nats per token and its standard error is the spread of the window-draw
estimates over the square root of their number. Bits per
character are nats per token / ln 2 times tokens per character of the part (1 for character tokens; for
bytes the part's bytes over its characters, `TextSet.num_chars`). An autoregressive run (`CausalLM`) gets the
exact NLL of the same windows, each scored from its BOS token (`nll_windows`), reported as `nll_bits_per_char`:
no Monte Carlo, so its standard error is the spread over windows only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse.core.spec import ModelSpec
from rediffuse.data.text import TextSet, Vocabulary, load_text
from rediffuse.evaluation.report import write_report
from rediffuse.runs import load_model

f64 = torch.float64


@torch.no_grad()
def nelbo_estimates(model: nn.Module, tokens: Tensor, block_length: int, *, draws: int = 1, seed: int = 0,
                    batch_size: int = 64, device: torch.device | str = "cpu") -> Tensor:
    """NELBO estimates [draws, W] in nats per token of the W = len // block_length windows of tokens [N]."""
    x_all = _windows(tokens, block_length)
    windows = len(x_all)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(draws, windows, dtype=f64)
    for k in range(draws):
        for start in range(0, windows, batch_size):
            x = x_all[start:start + batch_size].to(device)
            out[k, start:start + len(x)] = model.nelbo(x, generator).to("cpu", f64)
    return out


@torch.no_grad()
def nll_windows(model: nn.Module, tokens: Tensor, block_length: int, *, batch_size: int = 64,
                device: torch.device | str = "cpu") -> Tensor:
    """Exact NLLs [1, W] in nats per token of the W = len // block_length windows of tokens [N] (a CausalLM)."""
    x_all = _windows(tokens, block_length)
    return torch.cat([model.nll(x_all[i:i + batch_size].to(device)).to("cpu", f64)
                      for i in range(0, len(x_all), batch_size)]).unsqueeze(0)


def _windows(tokens: Tensor, block_length: int) -> Tensor:
    """The consecutive windows [W, block_length] of tokens [N] (ValueError if there is not one)."""
    windows = len(tokens) // block_length
    if windows < 1:
        raise ValueError(f"the held-out text has {len(tokens)} tokens, fewer than one window of {block_length}; "
                         "use a longer text")
    return tokens[: windows * block_length].reshape(windows, block_length)


def heldout_spec(data: str) -> str:
    """The held-out part of a run's text spec: text:PATH@train -> text:PATH@heldout (ValueError otherwise)."""
    if not data.endswith("@train"):
        raise ValueError(f"run data {data!r} has no held-out part; train on text:PATH@train (its last 10% is "
                         "the held-out part) or pass --data text:PATH@heldout")
    return data[: -len("@train")] + "@heldout"


def nelbo_report(estimates: Tensor, part: TextSet, block_length: int, name: str = "nelbo") -> dict[str, Any]:
    """bits/char with its standard error, nats/token and the counts of a [draws, W] table of estimates of `name`."""
    per_char = len(part.tokens) / part.num_chars / math.log(2)  # bits/char per nat/token
    values = estimates.reshape(-1)
    stderr = float(values.std()) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return {f"{name}_bits_per_char": float(values.mean()) * per_char, f"{name}_bits_per_char_stderr": stderr * per_char,
            f"{name}_nats_per_token": float(values.mean()), "tokens": estimates.shape[1] * block_length,
            "windows": estimates.shape[1], "draws_per_window": estimates.shape[0], "block_length": block_length,
            "token_kind": part.vocab.kind, "data": part.spec}


def evaluate_text(run_dir: str | Path, *, data: str | None = None, draws: int = 4, seed: int = 0,
                  batch_size: int = 64, device: str = "cpu") -> dict[str, Any]:
    """The held-out NELBO (AR runs: exact NLL) of a text run; writes RUN/eval/eval.json and eval.md; the report."""
    run_dir = Path(run_dir)
    model, spec, config = load_model(run_dir, device=device)
    if not isinstance(spec, ModelSpec) or spec.vocab is None:
        raise ValueError(f"run {str(run_dir)!r} is not a text run; --metrics nelbo measures text runs")
    vocab = Vocabulary.from_dict(spec.vocab)
    part = load_text(data or heldout_spec(config.data), vocab=vocab)
    block_length = int(spec.data.shape[0])
    if hasattr(model, "nll"):
        name, estimates = "nll", nll_windows(model, part.tokens, block_length, batch_size=batch_size, device=device)
    else:
        name, estimates = "nelbo", nelbo_estimates(model, part.tokens, block_length, draws=draws, seed=seed,
                                                   batch_size=batch_size, device=device)
    report = {"run": str(run_dir), "settings": {"metrics": [name], "seed": seed, "draws": len(estimates)},
              **nelbo_report(estimates, part, block_length, name)}
    write_report(run_dir, report, markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown report of a text evaluation."""
    if "nll_bits_per_char" in report:
        return (f"# Evaluation of {report['run']}\n\n"
                f"Held-out exact NLL of an autoregressive run on {report['data']} ({report['tokens']} "
                f"{report['token_kind']} tokens in {report['windows']} windows of {report['block_length']}, each "
                f"from BOS): {report['nll_bits_per_char']:.4f} +- {report['nll_bits_per_char_stderr']:.4f} "
                f"bits/char ({report['nll_nats_per_token']:.4f} nats/token).\n")
    return (f"# Evaluation of {report['run']}\n\n"
            f"Held-out NELBO on {report['data']} ({report['tokens']} {report['token_kind']} tokens in "
            f"{report['windows']} windows of {report['block_length']}, {report['draws_per_window']} draws each, "
            f"seed {report['settings']['seed']}): "
            f"{report['nelbo_bits_per_char']:.4f} +- {report['nelbo_bits_per_char_stderr']:.4f} bits/char "
            f"({report['nelbo_nats_per_token']:.4f} nats/token); an upper bound on the negative log-likelihood.\n")
