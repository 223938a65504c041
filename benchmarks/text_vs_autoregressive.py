"""Masked diffusion (ours) vs an autoregressive transformer of the same size, same text, same wall budget.

Both train on the `@train` part (first 90%) of one text for `--minutes` of wall time each, one after the other
in this process, alone on the machine, with the same transformer size (dim, depth, heads, block length), batch,
learning rate (AdamW, 100 warmup steps, cosine decay over the budget, grad clip 1, EMA 0.999) and seed; only the
objective differs: `masked` (bidirectional, the NELBO) vs `autoregressive` (causal, next-token cross-entropy
with a BOS token). Then, on the `@heldout` part (last 10%):

- held-out bits/char on its consecutive windows of the block length: ours the NELBO bound (4 draws per
  window, with its standard error), the AR model its exact NLL (each window from BOS, the same quantity the
  NELBO bounds);
- parameters, training steps and tokens/s (steps x batch x block length over the training wall time);
- the wall time to draw `--samples` x block-length characters: ours with its default sampler (ancestral,
  one reverse step per token), the AR model left to right (no key-value cache); float64 draws for both;
- generative perplexity: exp of the mean per-character NLL of the samples under the benchmark's own AR model;
- character entropy: the unigram entropy in bits of all samples' characters, next to that of the same number
  of consecutive real held-out characters (a low-entropy sample can fake a good perplexity).

The targets: ours / AR held-out ratio <= 1.10 and |entropy(samples) - entropy(real)| <= 0.1 bits.

The reference point is nanoGPT's shakespeare-char "baby GPT" (Karpathy, nanoGPT README and
config/train_shakespeare_char.py: 6 layers, 6 heads, 384 wide, block 256, batch 64, lr 1e-3, dropout 0.2 on a
GPU; on a CPU 4 layers, 4 heads, 128 wide, block 64, batch 12, no dropout, about 1.88 nats/char in ~3 minutes).
The defaults here are that CPU model (dim 128, depth 4, heads 4, no dropout, lr 1e-3) with the block length 256 of
the GPU recipe, so that 256-character samples are one window, and batch 16.

Each model's results are written atomically to OUT/<objective>.json once it is trained and measured; a rerun
with the same settings reuses them (so an interrupted benchmark resumes at the model it had not finished),
`--fresh` starts over. OUT/table.md, OUT/results.json and OUT/samples-<objective>.txt hold the outcome.

    python benchmarks/text_vs_autoregressive.py --data text:/work/shared/data/tinyshakespeare/input.txt \\
        [--minutes 15] [--dim 128 --depth 4 --heads 4 --block-length 256 --batch-size 16 --lr 1e-3] \\
        [--seed 0] [--out runs/text-bench]
    python benchmarks/text_vs_autoregressive.py --data text:input.txt --steps 20 --block-length 64  # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

import rediffuse
from rediffuse.config import TrainConfig
from rediffuse.data.text import load_text
from rediffuse.errors import ConfigError, UsageError
from rediffuse.evaluation.text import evaluate_text
from rediffuse.io import atomic_write_json, atomic_write_text
from rediffuse.runs import load_model
from rediffuse.train import train

OBJECTIVES = ("masked", "autoregressive")
LABELS = {"masked": "ours (masked diffusion)", "autoregressive": "AR transformer"}
SHOWN = 4  # samples of each model written to OUT/samples-<objective>.txt
COLUMNS = ("model", "held-out bits/char", "+- s.e.", "kind", "params", "steps", "tokens/s",
           "sample time (s)", "gen. PPL (AR)", "char entropy (bits)")


def entropy_bits(texts: list[str]) -> float:
    """The unigram entropy in bits of the characters of all texts."""
    counts = Counter("".join(texts))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def train_one(args: argparse.Namespace, objective: str, name: str | None = None,
              overrides: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one objective under the shared settings (with config overrides) in OUT/name; (run, steps, tokens/s)."""
    out = args.out / (name or objective)
    if out.exists():
        shutil.rmtree(out)  # a half-trained run of an earlier attempt: its budget would not be comparable
    values = dict(data=f"{args.data}@train", objective=objective, out=str(out), block_length=args.block_length,
                  batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine", warmup_steps=100, seed=args.seed,
                  steps=args.steps or 10**9, minutes=None if args.steps else args.minutes,
                  checkpoint_every=10**9, log_every=50, progress=False,
                  net_kwargs={"dim": args.dim, "depth": args.depth, "heads": args.heads})
    values.update(overrides or {})
    started = time.perf_counter()
    result = train(TrainConfig.from_dict(values))
    wall = time.perf_counter() - started
    tokens = result.step * values["batch_size"] * values["block_length"]
    return out, {"steps": result.step, "train_s": wall, "tokens_per_s": tokens / wall}


def sample_one(run: Path, objective: str, args: argparse.Namespace) -> tuple[list[str], float]:
    """args.samples texts of one block length from a run (ours: ancestral, one step per token); (texts, seconds)."""
    opened = rediffuse.load(run, device="cpu")
    started = time.perf_counter()
    x = opened.sample(args.samples, seed=args.seed, batch_size=args.samples, length=args.block_length,
                      steps=args.block_length if objective == "masked" else None)
    return opened.texts(x), time.perf_counter() - started


def measure(args: argparse.Namespace, objective: str) -> dict[str, Any]:
    """Train, evaluate and sample one objective (or reuse OUT/<objective>.json from the same settings)."""
    saved = args.out / f"{objective}.json"
    if saved.is_file() and not args.fresh:
        row = json.loads(saved.read_text())
        if row.get("settings") == settings(args):
            return row
    run, row = train_one(args, objective)
    report = evaluate_text(run)
    name = "nelbo" if objective == "masked" else "nll"
    params = sum(p.numel() for p in load_model(run)[0].parameters())
    texts, seconds = sample_one(run, objective, args)
    row.update(objective=objective, run=str(run), bits_per_char=report[f"{name}_bits_per_char"],
               stderr=report[f"{name}_bits_per_char_stderr"], kind="NELBO bound" if name == "nelbo" else "exact NLL",
               params=params, sample_s=seconds, entropy_bits=entropy_bits(texts), texts=texts,
               settings=settings(args))
    atomic_write_json(saved, row)
    return row


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that define a model's result (a saved result is reused only under the same ones)."""
    keys = ("data", "minutes", "steps", "dim", "depth", "heads", "block_length", "batch_size", "lr", "seed",
            "samples")
    return {k: getattr(args, k) for k in keys}


@torch.no_grad()
def generative_perplexity(ar_run: Path, texts: list[str]) -> float:
    """exp of the mean per-character NLL of texts under the AR model of ar_run."""
    model, _, _ = load_model(ar_run)
    x = torch.stack([model.vocab.encode(t) for t in texts])
    return math.exp(float(model.nll(x).double().mean()))


def table(rows: list[dict[str, Any]], real_entropy: float, args: argparse.Namespace) -> str:
    """The markdown table, the real-text row and the target checks."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [LABELS[r["objective"]], f"{r['bits_per_char']:.4f}", f"{r['stderr']:.4f}", r["kind"],
                 f"{r['params']:,}", str(r["steps"]), f"{r['tokens_per_s']:.0f}", f"{r['sample_s']:.2f}",
                 f"{r['gen_ppl']:.3f}", f"{r['entropy_bits']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| real held-out text | | | | | | | | | " + f"{real_entropy:.4f} |")
    ours, base = rows
    ratio = ours["bits_per_char"] / base["bits_per_char"]
    gap = abs(ours["entropy_bits"] - real_entropy)
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    return "\n".join([
        f"Same data ({args.data}), budget {budget} per model, dim {args.dim}, depth {args.depth}, heads "
        f"{args.heads}, block length {args.block_length}, batch {args.batch_size}, lr {args.lr:g}, seed "
        f"{args.seed}; {args.samples} samples of {args.block_length} characters each.", "", *lines, "",
        f"- ours / AR held-out ratio: {ratio:.4f} (target <= 1.10: {'met' if ratio <= 1.10 else 'not met'})",
        f"- |entropy(ours' samples) - entropy(real)|: {gap:.4f} bits (target <= 0.1: "
        f"{'met' if gap <= 0.1 else 'not met'})", ""])


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options (SystemExit 2 with a one-line message for bad ones)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    p.add_argument("--data", required=True, metavar="text:PATH", help="the text (split @train / @heldout)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall budget per model (default: 15)")
    p.add_argument("--steps", type=int, default=None, help="train each model this many steps instead (smoke runs)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--block-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=16, help="samples per model (default: 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", type=Path, default=Path("runs/text-bench"))
    p.add_argument("--fresh", action="store_true", help="retrain both models even if results are saved")
    args = p.parse_args(argv)
    if not args.data.startswith("text:") or args.data.endswith(("@train", "@heldout")):
        p.error(f"--data must be text:PATH without a split suffix (the benchmark uses @train and @heldout), "
                f"got {args.data!r}")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1) or args.samples < 1:
        p.error("--minutes must be > 0, --steps and --samples >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and write the table; the results."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(args, objective) for objective in OBJECTIVES]
    ar_run = Path(rows[1]["run"])
    for row in rows:
        row["gen_ppl"] = generative_perplexity(ar_run, row["texts"])
    heldout = load_text(f"{args.data}@heldout")
    real_entropy = entropy_bits([heldout.vocab.decode(heldout.tokens[: args.samples * args.block_length])])
    text = table(rows, real_entropy, args)
    atomic_write_text(args.out / "table.md", text)
    for row in rows:
        atomic_write_text(args.out / f"samples-{row['objective']}.txt", "\n=====\n".join(row["texts"][:SHOWN]) + "\n")
    results = {"settings": settings(args), "real_entropy_bits": real_entropy, "rows": rows,
               "ratio": rows[0]["bits_per_char"] / rows[1]["bits_per_char"]}
    atomic_write_json(args.out / "results.json", results)
    print(text)
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (UsageError, ConfigError) as err:  # a missing or unusable text: one line, exit 2
        print(f"text_vs_autoregressive.py: error: {err}", file=sys.stderr)
        sys.exit(2)
