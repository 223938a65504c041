"""Autoregressive, masked diffusion and block diffusion transformers of one size, same text, same wall budget.

Every model trains on the `@train` part (first 90%) of one text for `--minutes` of wall time, one after the other
in this process, alone on the machine, with the same transformer size (dim, depth, heads, block length), batch,
learning rate (AdamW, 100 warmup steps, cosine decay over the budget, grad clip 1, EMA 0.999) and seed; only the
objective differs (`--models`):
- `autoregressive`: causal, next-token cross-entropy from a BOS token;
- `masked`: bidirectional, the MDLM NELBO (Sahoo et al. 2024);
- `blockN`: block diffusion with blocks of N characters (BD3-LM, Arriola et al. 2025), its clipped masking rates
  chosen by `--rates`: `search` trains a `--pilot-minutes` pilot with rates U[0, 1], scores every candidate
  window by the variance of the training loss on 64 training windows (`rediffuse.evaluation.block_rates`) and
  keeps the lowest; `full` trains with U[0, 1].
Then, on the `@heldout` part (last 10%):
- held-out bits/char on its consecutive windows of the block length: the diffusion models' NELBO bounds (4 draws
  per window, with standard errors), the AR model's exact NLL (each window from BOS);
- parameters, training steps and tokens/s (steps x batch x block length over the training wall time);
- sampling: `--samples` x block-length characters, the wall time and characters per second, at the steps each
  uses (masked: one reverse step per character; block: one per character of each block, with a key-value cache
  of the finished blocks; AR: one token per call with a key-value cache); float64 draws for all;
- generative perplexity: exp of the mean per-character NLL of the samples under the benchmark's own AR model;
- character entropy: the unigram entropy in bits of all samples' characters, next to that of the same number
  of consecutive real held-out characters (a low-entropy sample can fake a good perplexity).
With `--curve-minutes M` each model also keeps a checkpoint every M minutes of training and reports the held-out
figure of each (OUT/curves.png): with a long budget (hours), the data-constrained regime where text repeats for
many epochs (Prabhudesai et al. 2025) shows whether diffusion overtakes AR.

The reference point is nanoGPT's shakespeare-char "baby GPT" (Karpathy, nanoGPT README and
config/train_shakespeare_char.py: 6 layers, 6 heads, 384 wide, block 256, batch 64, lr 1e-3, dropout 0.2 on a
GPU; on a CPU 4 layers, 4 heads, 128 wide, block 64, batch 12, no dropout, about 1.88 nats/char in ~3 minutes).
The defaults here are that CPU model (dim 128, depth 4, heads 4, no dropout, lr 1e-3) with the block length 256 of
the GPU recipe, so that 256-character samples are one window, and batch 16.

Each model's results are written atomically to OUT/<model>.json once it is trained and measured; a rerun with the
same settings reuses them (so an interrupted benchmark resumes at the model it had not finished), `--fresh`
starts over. OUT/table.md, OUT/results.json and OUT/samples-<model>.txt hold the outcome.

    python benchmarks/text_vs_autoregressive.py --data text:/work/shared/data/tinyshakespeare/input.txt \\
        [--minutes 15] [--models autoregressive masked block4 block8 block16] [--rates search|full] \\
        [--curve-minutes 10] [--dim 128 --depth 4 --heads 4 --block-length 256 --batch-size 16 --lr 1e-3] \\
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
from rediffuse import checkpoint, runs
from rediffuse.data.text import Vocabulary, load_text
from rediffuse.errors import ConfigError, UsageError
from rediffuse.evaluation.block_rates import loss_variance, lowest_variance, rate_windows
from rediffuse.evaluation.text import evaluate_text, nelbo_estimates, nelbo_report, nll_windows
from rediffuse.io import atomic_write_json, atomic_write_text
from rediffuse.runs import load_model
from rediffuse.train import train

MODELS = ("autoregressive", "masked", "block4", "block8", "block16")
SHOWN = 4  # samples of each model written to OUT/samples-<model>.txt
PILOT_WINDOWS = 64  # training windows on which a pilot scores the candidate masking rates
COLUMNS = ("model", "held-out bits/char", "+- s.e.", "kind", "params", "steps", "tokens/s", "sample steps",
           "sample time (s)", "chars/s", "gen. PPL (AR)", "char entropy (bits)")


def label(model: str, row: dict[str, Any] | None = None) -> str:
    """A model's name in the table."""
    if model == "autoregressive":
        return "AR transformer"
    if model == "masked":
        return "masked diffusion (MDLM)"
    rates = "" if row is None else f", rates U[{row['rates'][0]:g}, {row['rates'][1]:g}]"
    return f"block diffusion, L' = {block_of(model)}{rates}"


def block_of(model: str) -> int | None:
    """N of a blockN model, None for the others."""
    return int(model[5:]) if model.startswith("block") else None


def entropy_bits(texts: list[str]) -> float:
    """The unigram entropy in bits of the characters of all texts."""
    counts = Counter("".join(texts))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def train_one(args: argparse.Namespace, objective: str, name: str, overrides: dict[str, Any] | None = None,
              minutes: float | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one objective under the shared settings (with config overrides) in OUT/name; (run, steps, tokens/s)."""
    out = args.out / name
    if out.exists():
        shutil.rmtree(out)  # a half-trained run of an earlier attempt: its budget would not be comparable
    values = dict(data=f"{args.data}@train", objective=objective, out=str(out), block_length=args.block_length,
                  batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine", warmup_steps=100, seed=args.seed,
                  steps=args.steps or 10**9, minutes=None if args.steps else (minutes or args.minutes),
                  checkpoint_every=10**9, log_every=50, progress=False,
                  net_kwargs={"dim": args.dim, "depth": args.depth, "heads": args.heads})
    if args.curve_minutes and minutes is None:
        values.update(checkpoint_minutes=args.curve_minutes, keep_last=10**6)
    values.update(overrides or {})
    started = time.perf_counter()
    result = train(TrainConfig.from_dict(values))
    wall = time.perf_counter() - started
    tokens = result.step * values["batch_size"] * values["block_length"]
    return out, {"steps": result.step, "train_s": wall, "tokens_per_s": tokens / wall}


def search_rates(args: argparse.Namespace, block: int) -> tuple[float, float]:
    """The clipped rates of the lowest loss variance, scored by a pilot run trained with rates U[0, 1]."""
    run, _ = train_one(args, "block", f"pilot-block{block}", {"block_tokens": block}, minutes=args.pilot_minutes)
    model = load_model(run)[0]
    tokens = load_text(f"{args.data}@train").tokens
    generator = torch.Generator().manual_seed(args.seed)
    starts = torch.randint(0, len(tokens) - args.block_length, (PILOT_WINDOWS,), generator=generator)
    windows = torch.stack([tokens[i:i + args.block_length] for i in starts.tolist()])
    best = lowest_variance(loss_variance(model, windows, rate_windows(), seed=args.seed))
    return best.low, best.high


def sample_one(run: Path, model: str, args: argparse.Namespace) -> tuple[list[str], float, int]:
    """args.samples texts of one block length from a run at its default steps; (texts, seconds, steps)."""
    opened = rediffuse.load(run, device="cpu")
    steps = args.block_length if model == "masked" else None
    started = time.perf_counter()
    x = opened.sample(args.samples, seed=args.seed, batch_size=args.samples, length=args.block_length, steps=steps)
    return opened.texts(x), time.perf_counter() - started, args.block_length


@torch.no_grad()
def curve(run: Path, args: argparse.Namespace) -> list[tuple[float, float, int]]:
    """(training minutes, held-out bits/char, step) of every checkpoint of a run, oldest first."""
    heldout, points = None, []
    for folder in checkpoint.list_checkpoints(run):
        opened = runs.open(folder)
        if heldout is None:
            heldout = load_text(f"{args.data}@heldout", vocab=Vocabulary.from_dict(opened.spec.vocab))
        model = opened.model("cpu")
        if hasattr(model, "nll"):
            estimates = nll_windows(model, heldout.tokens, args.block_length)
        else:
            estimates = nelbo_estimates(model, heldout.tokens, args.block_length, draws=2, seed=args.seed)
        report = nelbo_report(estimates, heldout, args.block_length)
        manifest = checkpoint.read_manifest(folder)
        points.append((float(manifest["meta"].get("elapsed", 0.0)) / 60, report["nelbo_bits_per_char"],
                       int(manifest["step"])))
    return points


def measure(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Train, evaluate and sample one model (or reuse OUT/<model>.json from the same settings)."""
    saved = args.out / f"{model}.json"
    if saved.is_file() and not args.fresh:
        row = json.loads(saved.read_text())
        if row.get("settings") == settings(args):
            return row
    block, overrides, rates = block_of(model), {}, None
    if block is not None:
        rates = search_rates(args, block) if args.rates == "search" else (0.0, 1.0)
        overrides = {"block_tokens": block, "mask_rate_min": rates[0], "mask_rate_max": rates[1]}
    objective = "block" if block is not None else model
    run, row = train_one(args, objective, model, overrides)
    report = evaluate_text(run)
    name = "nll" if model == "autoregressive" else "nelbo"
    params = sum(p.numel() for p in load_model(run)[0].parameters())
    texts, seconds, steps = sample_one(run, model, args)
    row.update(objective=model, run=str(run), bits_per_char=report[f"{name}_bits_per_char"],
               stderr=report[f"{name}_bits_per_char_stderr"], kind="NELBO bound" if name == "nelbo" else "exact NLL",
               params=params, sample_s=seconds, sample_steps=steps, chars_per_s=args.samples * args.block_length
               / seconds, entropy_bits=entropy_bits(texts), texts=texts, rates=rates, settings=settings(args),
               curve=curve(run, args) if args.curve_minutes else [])
    atomic_write_json(saved, row)
    return row


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options that define a model's result (a saved result is reused only under the same ones)."""
    keys = ("data", "minutes", "steps", "dim", "depth", "heads", "block_length", "batch_size", "lr", "seed",
            "samples", "rates", "pilot_minutes", "curve_minutes", "threads")
    return {k: getattr(args, k) for k in keys}


@torch.no_grad()
def generative_perplexity(ar_run: Path, texts: list[str]) -> float:
    """exp of the mean per-character NLL of texts under the AR model of ar_run."""
    model, _, _ = load_model(ar_run)
    x = torch.stack([model.vocab.encode(t) for t in texts])
    return math.exp(float(model.nll(x).double().mean()))


def table(rows: list[dict[str, Any]], real_entropy: float, args: argparse.Namespace) -> str:
    """The markdown table, the real-text row and each diffusion model's ratio to AR."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [label(r["objective"], r), f"{r['bits_per_char']:.4f}", f"{r['stderr']:.4f}", r["kind"],
                 f"{r['params']:,}", str(r["steps"]), f"{r['tokens_per_s']:.0f}", str(r["sample_steps"]),
                 f"{r['sample_s']:.2f}", f"{r['chars_per_s']:.0f}", f"{r['gen_ppl']:.3f}", f"{r['entropy_bits']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| real held-out text |" + " |" * (len(COLUMNS) - 2) + f" {real_entropy:.4f} |")
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    notes = []
    base = rows[0]  # the AR model, always first
    for r in rows[1:]:
        ratio = r["bits_per_char"] / base["bits_per_char"]
        gap = abs(r["entropy_bits"] - real_entropy)
        notes.append(f"- {label(r['objective'])}: held-out ratio to AR {ratio:.4f}, "
                     f"|entropy(samples) - entropy(real)| {gap:.4f} bits")
    return "\n".join([
        f"Same data ({args.data}), budget {budget} per model, dim {args.dim}, depth {args.depth}, heads "
        f"{args.heads}, block length {args.block_length}, batch {args.batch_size}, lr {args.lr:g}, seed "
        f"{args.seed}; {args.samples} samples of {args.block_length} characters each.", "", *lines, "", *notes, ""])


def plot_curves(rows: list[dict[str, Any]], train_chars: int, args: argparse.Namespace, path: Path) -> Path | None:
    """Held-out bits/char against training minutes and against epochs, one line per model (None without curves)."""
    if not any(r["curve"] for r in rows):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for r in rows:
        if r["curve"]:
            minutes, bits, steps = zip(*r["curve"])
            epochs = [s * args.batch_size * args.block_length / train_chars for s in steps]
            for ax, x in zip(axes, (minutes, epochs)):
                ax.plot(x, bits, marker="o", label=f"{label(r['objective'])} ({r['kind']})")
    axes[0].set_xlabel(f"training minutes (this CPU, {args.threads} thread(s) per model)")
    axes[1].set_xlabel("epochs of the @train text (training windows x window length / its characters)")
    axes[0].set_ylabel("held-out bits/char")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's options (SystemExit 2 with a one-line message for bad ones)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    p.add_argument("--data", required=True, metavar="text:PATH", help="the text (split @train / @heldout)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall budget per model (default: 15)")
    p.add_argument("--steps", type=int, default=None, help="train each model this many steps instead (smoke runs)")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="autoregressive, masked and blockN models")
    p.add_argument("--rates", choices=("search", "full"), default="search", help="block models' masking rates")
    p.add_argument("--pilot-minutes", type=float, default=2.0, help="the rate search's pilot budget")
    p.add_argument("--curve-minutes", type=float, default=None, help="a held-out point every M training minutes")
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
    p.add_argument("--fresh", action="store_true", help="retrain every model even if results are saved")
    args = p.parse_args(argv)
    if not args.data.startswith("text:") or args.data.endswith(("@train", "@heldout")):
        p.error(f"--data must be text:PATH without a split suffix (the benchmark uses @train and @heldout), "
                f"got {args.data!r}")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1) or args.samples < 1:
        p.error("--minutes must be > 0, --steps and --samples >= 1")
    bad = [m for m in args.models if m not in ("autoregressive", "masked") and not
           (m.startswith("block") and m[5:].isdigit() and int(m[5:]) >= 1 and args.block_length % int(m[5:]) == 0)]
    if bad:
        p.error(f"--models takes autoregressive, masked and blockN with N dividing --block-length "
                f"{args.block_length}; got {' '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and write the table (once the AR reference is measured); the results."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    models = sorted(set(args.models), key=lambda m: (m != "autoregressive", args.models.index(m)))
    rows = [measure(args, model) for model in models]
    if models[0] != "autoregressive":
        saved = args.out / "autoregressive.json"
        reference = json.loads(saved.read_text()) if saved.is_file() else None
        if reference is None or reference.get("settings") != settings(args):
            print(f"saved {', '.join(models)} in {args.out}; the table needs the AR reference: run --models "
                  f"autoregressive with the same settings (alone or beside these)")
            return {"settings": settings(args), "rows": rows}
        rows.insert(0, reference)
    ar_run = Path(rows[0]["run"])
    for row in rows:
        row["gen_ppl"] = generative_perplexity(ar_run, row["texts"])
    heldout = load_text(f"{args.data}@heldout")
    real_entropy = entropy_bits([heldout.vocab.decode(heldout.tokens[: args.samples * args.block_length])])
    text = table(rows, real_entropy, args)
    atomic_write_text(args.out / "table.md", text)
    for row in rows:
        atomic_write_text(args.out / f"samples-{row['objective']}.txt", "\n=====\n".join(row["texts"][:SHOWN]) + "\n")
    plot_curves(rows, len(load_text(f"{args.data}@train").tokens), args, args.out / "curves.png")
    results = {"settings": settings(args), "real_entropy_bits": real_entropy, "rows": rows}
    atomic_write_json(args.out / "results.json", results)
    print(text)
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (UsageError, ConfigError) as err:  # a missing or unusable text: one line, exit 2
        print(f"text_vs_autoregressive.py: error: {err}", file=sys.stderr)
        sys.exit(2)
