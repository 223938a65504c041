"""A smoke run of benchmarks/audio_vs_peer.py: both models train a few steps, sample, get scored and saved
(slow: it reads the shared FSDD recordings, and the FSDD classifier may need training first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripts import load_script

FSDD = Path("/work/shared/data/fsdd/recordings")
SCRIPT = "benchmarks/audio_vs_peer.py"


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD recordings not present")
def test_audio_benchmark_smoke(tmp_path):
    pytest.importorskip("diffusers")
    module = load_script(SCRIPT)
    argv = ["--data", f"fsdd:{FSDD}", "--steps", "2", "--samples", "10", "--rtf-clips", "2", "--peer-steps", "2",
            "--level-clips", "4", "--out", str(tmp_path), "--threads", "1"]
    results = module.main(argv)
    assert [row["model"] for row in results["rows"]] == ["ours", "peer"]
    for row in results["rows"]:
        assert row["steps"] == 2 and row["rtf"] > 0 and row["scores"]["fd"] > 0
        saved = json.loads((tmp_path / f"{row['model']}.json").read_text())
        assert saved["settings"] == results["settings"] and saved["model"] == row["model"]
        assert len(list((tmp_path / row["model"]).glob("sample-*.wav"))) == 10
        assert set(row["level_match"]) == {"rms", "peak"} and row["level_match"]["rms"]["ratio"] > 0
    assert 0 <= results["rows"][0]["scores"]["class_accuracy"] <= 1
    assert module.main(argv)["rows"] == results["rows"]  # the second call reuses the saved results
    assert (tmp_path / "table.md").read_text().count("\n| ") >= 3
    assert "per-clip level off by" in (tmp_path / "table.md").read_text()
