"""A smoke run of benchmarks/time_to_quality.py: both recipes train, sample and get scored (slow: the MNIST
classifier may need training first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import load_script

MNIST = Path("/work/shared/data/mnist")
SCRIPT = "benchmarks/time_to_quality.py"


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not present")
def test_time_to_quality_smoke(tmp_path):
    pytest.importorskip("diffusers")
    module = load_script(SCRIPT)
    module.main(["--minutes", "0.1", "--curve-every", "0.05", "--n", "20", "--peer-steps", "2", "--out",
                 str(tmp_path), "--threads", "1"])
    result = json.loads((tmp_path / "results.json").read_text())
    names = [name for name, _ in result["runs"]]
    assert names.count("diffusers standard") == 1 and names.count("rediffuse mnist-fast") >= 2
    for _, row in result["runs"]:
        assert 0 <= row["accuracy"] <= 1 and row["fd"] > 0
    assert (tmp_path / "ours.png").is_file() and (tmp_path / "diffusers.png").is_file()
