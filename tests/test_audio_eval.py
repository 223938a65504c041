"""Evaluating spoken digits: the self-trained FSDD classifier, the FD sanity curve, and `rediffuse eval` on audio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rediffuse.cli import main
from rediffuse.evaluation.features import extract_features, load_or_train_classifier, load_split
from rediffuse.evaluation.metrics import frechet_distance
from rediffuse.audio.spectral import log_mel_image
from helpers import AUDIO_NET, FSDD, write_fsdd

needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason="the shared FSDD recordings are not here")


@pytest.fixture(scope="module")
def fsdd_classifier(tmp_path_factory):
    torch.set_num_threads(1)
    model, meta = load_or_train_classifier("fsdd", str(FSDD), cache_dir=tmp_path_factory.mktemp("cache"))
    return model, meta


@needs_fsdd
def test_the_fsdd_classifier_recognises_held_out_recordings(fsdd_classifier):
    _, meta = fsdd_classifier
    assert meta["n_train"] == 2700 and meta["n_heldout"] == 300
    assert meta["heldout_accuracy"] >= 0.95


@needs_fsdd
def test_fd_grows_with_noise_and_with_time_shifts(fsdd_classifier):
    from rediffuse.data.audio import load_audio

    model, _ = fsdd_classifier
    train_feats = extract_features(model, load_split("fsdd", str(FSDD)).train_x)
    held = load_audio(f"fsdd:{FSDD}@heldout").x
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(held.shape, generator=g)
    fd = lambda x: frechet_distance(extract_features(model, log_mel_image(x, 8000)), train_feats)  # noqa: E731
    by_noise = [fd((held + s * noise).clamp(-1, 1)) for s in (0.0, 0.01, 0.05, 0.2)]
    assert by_noise == sorted(by_noise) and by_noise[-1] > 4 * by_noise[0]
    shifted = lambda k: torch.nn.functional.pad(held, (k, 0))[..., : held.shape[-1]]  # noqa: E731
    by_shift = [fd(shifted(k)) for k in (0, 2048, 4096, 6144)]
    assert by_shift == sorted(by_shift) and by_shift[-1] > 4 * by_shift[0]


def test_eval_of_an_audio_run_reports_accuracy_fd_is_and_the_floor(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REDIFFUSE_CACHE", str(tmp_path / "cache"))
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(3), speakers=("ann", "bob"), indices=range(8), n=700)
    run = tmp_path / "run"
    assert main(["train", "--data", f"fsdd:{recordings}@train", "--conditional", "--clip-length", "512",
                 "--steps", "2", "--batch-size", "8", "--out", str(run), "--no-progress",
                 "--net-kwargs", json.dumps(AUDIO_NET)]) == 0
    assert main(["eval", str(run), "-n", "12", "--steps", "2", "--batch-size", "6"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["classifier"]["kind"] == "fsdd"
    for row in ("samples", "heldout_real"):
        assert {"fd", "class_accuracy", "inception_score", "modified_inception_score"} <= set(report[row])
    assert report["heldout_real"]["n"] == 30 and 1 <= report["heldout_real"]["inception_score"] <= 10
    assert "inception_score" in (run / "eval" / "eval.md").read_text()
    second = report["second"]  # the second opinion, of another family, and the level and silence
    assert second["kind"] == "logistic regression on MFCC statistics" and second["heldout_accuracy"] == 1.0
    assert {"fd", "recall", "class_accuracy"} <= set(second["samples"]) and second["heldout_real"]["n"] == 30
    real = report["levels"]["heldout_real"]  # tones of amplitude 0.5 filling the 512 samples of the run's clips
    assert real["peak"] == pytest.approx(0.5, rel=0.01) and real["silence_db"] > -1
    assert all(math.isfinite(report["levels"][k]["cpp_db"]) for k in ("samples", "heldout_real"))
    match = report["level_match"]  # per-clip distributions: the tones all have RMS 0.5 / sqrt(2)
    samples_rms = report["levels"]["samples"]["rms"]
    assert match["rms"]["quantiles"]["50%"] == pytest.approx(samples_rms / (0.5 / math.sqrt(2)), rel=0.02)
    assert set(match) == {"rms", "peak"} and match["rms"]["ratio_se"] > 0
    assert match["peak"]["spread"] is None  # every real tone peaks at 0.5: no spread to compare with
    assert "geometric-mean ratio" in (run / "eval" / "eval.md").read_text()
    assert "Second opinion" in (run / "eval" / "eval.md").read_text()
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "nll"]) == 2
    assert "an audio run takes a comma list from fd,prdc,acc,is" in capsys.readouterr().err


def test_fsdd_classifier_needs_its_folder():
    with pytest.raises(ValueError, match="recordings folder"):
        load_split("fsdd")


def test_the_synthetic_split_follows_the_fsdd_rule(tmp_path):
    write_fsdd(tmp_path / "rec", digits=range(2), speakers=("ann",), indices=range(7), n=400)
    split = load_split("fsdd", str(tmp_path / "rec"))
    assert split.train_x.shape == (4, 1, 32, 32) and split.heldout_x.shape == (10, 1, 32, 32)
    assert split.train_y.tolist() == [0, 0, 1, 1]
    assert Path(tmp_path / "rec").is_dir()
