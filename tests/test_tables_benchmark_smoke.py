"""benchmarks/tables_vs_baselines.py runs end to end on a bundled set and writes its table."""

from __future__ import annotations

import sys

from scripts import load_script


def test_the_tables_benchmark_writes_a_row_per_method(tmp_path, monkeypatch):
    bench = load_script("benchmarks/tables_vs_baselines.py")
    out = tmp_path / "t.md"
    monkeypatch.setattr(sys, "argv", ["x", "--sets", "iris", "--seeds", "0", "--epochs", "20", "--out", str(out)])
    bench.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| iris |")]
    assert [r.split(" | ")[1] for r in rows] == ["ours (20 epochs = 3 steps)", "independent marginals",
                                                  "Gaussian copula", "SMOTE", "copy of training rows",
                                                  "held-out real rows (floor)"]
    copy = next(r for r in rows if "copy of" in r).split(" | ")
    assert float(copy[2]) == 0.0 and float(copy[7]) > 0.95  # the copy's shape error is 0, its DCR share near 1
