"""rediffuse eval end to end on a tiny digits run: metrics for samples and for held-out real data."""

import json

from rediffuse.cli import main


def test_eval_writes_metrics_for_samples_and_the_real_floor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDIFFUSE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["demo", "--out", str(run), "--steps", "5"]) == 0
    assert main(["eval", str(run), "-n", "60", "--steps", "3", "--nll-n", "2", "--batch-size", "30"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    real, fake = report["heldout_real"], report["samples"]
    assert real["class_accuracy"] > 0.95 and real["fd"] < fake["fd"]  # an untrained model is far from data
    assert set(fake) >= {"fd", "precision", "recall", "density", "coverage", "class_accuracy"}
    assert report["nll"]["bits_per_dim"] > 0
    assert "held-out real data (floor)" in (run / "eval" / "eval.md").read_text()
    cached = list((run / "eval").glob("samples-*.npz"))
    assert len(cached) == 1
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "fd,bogus"]) == 2
    assert "--metrics" in capsys.readouterr().err
