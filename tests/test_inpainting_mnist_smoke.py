"""A smoke run of benchmarks/inpainting.py: a tiny MNIST run inpainted by each method and by diffusers'
RePaint, scored by the project's classifier (slow: the classifier may need training first)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripts import load_script

from rediffuse.cli import main

MNIST = Path("/work/shared/data/mnist")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not present")
def test_inpainting_mnist_smoke(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    run = tmp_path / "run"
    assert main(["train", "--preset", "mnist-fast", "--data", f"mnist:{MNIST}@train", "--steps", "2",
                 "--minutes", "5", "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    out = tmp_path / "t.md"
    monkeypatch.setattr("sys.argv", ["inpainting.py", "--run", str(run), "--data", str(MNIST), "--n", "8",
                                     "--nfe", "12", "--out", str(out)])
    load_script("benchmarks/inpainting.py").main()
    rows = [r for r in out.read_text().splitlines()[2:] if r.startswith("| ")]
    assert len(rows) == 14 and sum("diffusers RePaint" in r for r in rows) == 2
    nfe = {r.split("|")[2].strip(): int(r.split("|")[3]) for r in rows[:7]}
    assert nfe["smc (twisted, 10 particles over the classes)"] == 10  # 10 particles x 1 step fit in 12
    assert nfe["smc (twisted, 4 particles, null class)"] == nfe["smc (SMCDiff, 4 particles, null class)"] == 12
    assert nfe["replace (Euler)"] == 12 and nfe["replace (Heun)"] == 11
    assert nfe["repaint (jump 5, resample 2)"] == nfe["diffusers RePaint (jump 5, resample 2)"] <= 12  # equal NFE
