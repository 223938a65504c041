"""A smoke run of benchmarks/text_vs_autoregressive.py: both models train a few steps, get scored and tabled."""

from __future__ import annotations

import json
import math

from helpers import markov_text
from scripts import load_script

SCRIPT = "benchmarks/text_vs_autoregressive.py"


def load_benchmark():
    return load_script(SCRIPT)


def test_text_benchmark_smoke(tmp_path, capsys):
    path, _ = markov_text(tmp_path / "m.txt", n=3000)
    bench, out = load_benchmark(), tmp_path / "bench"
    argv = ["--data", f"text:{path}", "--steps", "3", "--dim", "16", "--depth", "1", "--heads", "2",
            "--block-length", "16", "--batch-size", "4", "--samples", "3", "--out", str(out), "--threads", "1"]
    results = bench.main(argv)
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench.COLUMNS)
    assert "ours / AR held-out ratio" in printed and "entropy(real)" in printed
    rows = {row["objective"]: row for row in results["rows"]}
    assert set(rows) == {"masked", "autoregressive"} and rows["masked"]["params"] == rows["autoregressive"]["params"]
    for row in rows.values():
        assert row["steps"] == 3 and len(row["texts"]) == 3 and all(len(t) == 16 for t in row["texts"])
        for key in ("bits_per_char", "stderr", "tokens_per_s", "sample_s", "gen_ppl", "entropy_bits"):
            assert math.isfinite(row[key]) and row[key] >= 0, key
    assert math.isfinite(results["real_entropy_bits"]) and math.isfinite(results["ratio"])
    assert (out / "table.md").read_text().strip() in printed
    assert json.loads((out / "results.json").read_text())["rows"][0]["objective"] == "masked"
    assert (out / "samples-autoregressive.txt").read_text().count("\n=====\n") == 2
    stamp = (out / "masked.json").stat().st_mtime_ns
    assert bench.main(argv)["rows"][0]["texts"] == rows["masked"]["texts"]  # the saved results are reused
    assert (out / "masked.json").stat().st_mtime_ns == stamp
