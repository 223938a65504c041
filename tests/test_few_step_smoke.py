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
    for row in result["rows"] + result["teacher_floor"]:
        assert 0 <= row["accuracy"] <= 1 and row["fd"] > 0
    assert (tmp_path / "same_noise.png").is_file() and (tmp_path / "results.md").is_file()
