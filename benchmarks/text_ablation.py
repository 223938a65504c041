"""Which settings matter for masked diffusion of text in a CPU budget: one change at a time against a base.

Each variant trains the masked objective on the `@train` part of one text for `--minutes` of wall time, alone
on the machine, one after the other, with the base settings of `text_vs_autoregressive.py` (dim 128, depth 4,
heads 4, block 256, batch 16, lr 1e-3, cosine decay over the budget, EMA 0.999) except the variant's change,
and is scored by its held-out NELBO bound in bits/char (4 draws per window, with its standard error). A
variant's result is saved to OUT/<variant>.json and reused by a rerun with the same settings; OUT/table.md
holds the table.

    python benchmarks/text_ablation.py --data text:/work/shared/data/tinyshakespeare/input.txt \\
        [--minutes 3] [--only base,lr2e-3] [--out runs/text-ablation]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from rediffuse.errors import ConfigError, UsageError
from rediffuse.evaluation.text import evaluate_text
from rediffuse.io import atomic_write_json, atomic_write_text
from rediffuse.runs import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_vs_autoregressive import train_one  # noqa: E402  (a sibling benchmark script)

# name -> (what changes, the config overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("dim 128, depth 4, heads 4, block 256, batch 16, lr 1e-3", {}),
    "lr2e-3": ("lr 2e-3", {"lr": 2e-3}),
    "lr4e-3": ("lr 4e-3", {"lr": 4e-3}),
    "wide": ("dim 192, heads 6 (1.8M parameters)", {"net_kwargs": {"dim": 192, "depth": 4, "heads": 6}}),
    "small": ("dim 96, depth 3, heads 4 (0.35M parameters)", {"net_kwargs": {"dim": 96, "depth": 3, "heads": 4}}),
    "block128": ("block 128, batch 32 (same tokens per step)", {"block_length": 128, "batch_size": 32}),
    "batch32": ("batch 32", {"batch_size": 32}),
    "cosine": ("cosine masking schedule", {"mask_schedule": "cosine"}),
}
COLUMNS = ("variant", "change", "params", "steps", "tokens/s", "held-out bits/char", "+- s.e.")


def measure(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train and score one variant (or reuse OUT/<name>.json from the same settings)."""
    saved = args.out / f"{name}.json"
    key = {"data": args.data, "minutes": args.minutes, "steps": args.steps, "seed": args.seed,
           "variant": VARIANTS[name][1]}
    if saved.is_file() and json.loads(saved.read_text()).get("settings") == key:
        return json.loads(saved.read_text())
    run, row = train_one(args, "masked", name, VARIANTS[name][1])
    report = evaluate_text(run)
    row.update(variant=name, params=sum(p.numel() for p in load_model(run)[0].parameters()),
               bits_per_char=report["nelbo_bits_per_char"], stderr=report["nelbo_bits_per_char_stderr"],
               settings=key)
    atomic_write_json(saved, row)
    return row


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown table of the variants."""
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    lines = [f"Masked diffusion on {args.data}@train, {budget} per variant, seed {args.seed}; held-out NELBO bound.",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["variant"], VARIANTS[r["variant"]][0], f"{r['params']:,}", str(r["steps"]),
                 f"{r['tokens_per_s']:.0f}", f"{r['bits_per_char']:.4f}", f"{r['stderr']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The ablation's options, with the base settings `train_one` reads."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, metavar="text:PATH")
    p.add_argument("--minutes", type=float, default=3.0, help="wall budget per variant (default: 3)")
    p.add_argument("--steps", type=int, default=None, help="train each variant this many steps instead (smoke)")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/text-ablation"))
    args = p.parse_args(argv)
    args.only = args.only.split(",")
    unknown = [v for v in args.only if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    args.dim, args.depth, args.heads, args.block_length, args.batch_size, args.lr = 128, 4, 4, 256, 16, 1e-3
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the variants; print and write the table."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only:
        rows.append(measure(args, name))
        atomic_write_text(args.out / "table.md", table(rows, args))
        print(table(rows[-1:], args).splitlines()[-1], flush=True)
    print(table(rows, args))
    return rows


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (UsageError, ConfigError) as err:
        print(f"text_ablation.py: error: {err}", file=sys.stderr)
        sys.exit(2)
