"""A smoke run of benchmarks/few_step.py: teacher, training-free floor, student, more teacher training, scored
(slow: the MNIST classifier may need training first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import load_script

MNIST = Path("/work/shared/data/mnist")
SCRIPT = "benchmarks/few_step.py"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not present")
def test_few_step_smoke(tmp_path):
    module = load_script(SCRIPT)
    module.main(["--teacher-minutes", "0.1", "--distill-minutes", "0.1", "--at", "0.05,0.1", "--n", "20",
                 "--guidance", "2", "--out", str(tmp_path), "--threads", "1"])
    result = json.loads((tmp_path / "results.json").read_text())
    models = [row["model"] for row in result["rows"]]
    assert models.count("student (ECT)") >= 3 and "teacher, trained on" in models
    assert {row["nfe"] for row in result["teacher_floor"]} == {1, 2, 4}
    scored = result["rows"] + result["teacher_floor"]
    print(f"\nFD floor {result['floor']:.3f}; FD / floor from {min(r['fd_ratio'] for r in scored):.2f}; class "
          f"accuracy from {min(r['accuracy'] for r in scored):.3f} to {max(r['accuracy'] for r in scored):.3f}")
    for row in scored:
        # Models trained for seconds (about 10 teacher steps here) are far from MNIST: their 20 samples' FD is
        # above 20 real training images' floor (16x or more measured) and the table's ratio is to that floor.
        # Accuracy is k of the 20 class-balanced samples; every row measured chance (0.100), so it has no bound
        # above chance.
        assert row["fd"] > result["floor"] and row["fd_ratio"] == pytest.approx(row["fd"] / result["floor"])
        correct = row["accuracy"] * 20
        assert abs(correct - round(correct)) < 1e-4 and 0 <= round(correct) <= 20, row
    assert (tmp_path / "same_noise.png").is_file() and (tmp_path / "results.md").is_file()
