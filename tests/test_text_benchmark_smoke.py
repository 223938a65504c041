"""A smoke run of benchmarks/text_vs_autoregressive.py: AR, masked and block models train a few steps (the block
model after its rate-search pilot), get scored, sampled, tabled and plotted."""

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
            "--block-length", "16", "--batch-size", "4", "--samples", "3", "--out", str(out), "--threads", "1",
            "--models", "masked", "block4", "autoregressive", "--curve-minutes", "100"]
    alone = bench.main(argv[:-5] + ["masked", "--curve-minutes", "100"])  # a model run beside the AR reference
    assert "the table needs the AR reference" in capsys.readouterr().out and not (out / "table.md").exists()
    masked_stamp = (out / "masked.json").stat().st_mtime_ns
    results = bench.main(argv)
    printed = capsys.readouterr().out
    assert (out / "masked.json").stat().st_mtime_ns == masked_stamp
    assert results["rows"][1]["texts"] == alone["rows"][0]["texts"]
    header = next(line for line in printed.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench.COLUMNS)
    assert printed.count("held-out ratio to AR") == 2 and "entropy(real)" in printed
    rows = {row["objective"]: row for row in results["rows"]}
    assert [row["objective"] for row in results["rows"]] == ["autoregressive", "masked", "block4"]
    assert rows["masked"]["params"] == rows["autoregressive"]["params"] == rows["block4"]["params"]
    low, high = rows["block4"]["rates"]
    assert 0 <= low < high <= 1 and high - low >= 0.5 - 1e-9 and "rates U[" in printed
    for row in rows.values():
        assert row["steps"] == 3 and len(row["texts"]) == 3 and all(len(t) == 16 for t in row["texts"])
        for key in ("bits_per_char", "stderr", "tokens_per_s", "sample_s", "chars_per_s", "gen_ppl",
                    "entropy_bits"):
            assert math.isfinite(row[key]) and row[key] >= 0, key
        assert len(row["curve"]) == 1 and math.isfinite(row["curve"][0][1])  # the final checkpoint
        assert row["curve"][0][2] == 3
    assert math.isfinite(results["real_entropy_bits"])
    assert (out / "table.md").read_text().strip() in printed and (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["rows"][0]["objective"] == "autoregressive"
    assert (out / "samples-block4.txt").read_text().count("\n=====\n") == 2
    stamp = (out / "block4.json").stat().st_mtime_ns
    assert bench.main(argv)["rows"][2]["texts"] == rows["block4"]["texts"]  # the saved results are reused
    assert (out / "block4.json").stat().st_mtime_ns == stamp
