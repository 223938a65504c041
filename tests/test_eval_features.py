"""`rediffuse eval --features`: a classifier trained on a run's own labelled folder (cached by data hash), FID's
Inception-v3 from a weights file, and one-line errors for data without built-in features."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from rediffuse.cli import main
from rediffuse.evaluation.features import cache as classifier_cache
from rediffuse.viz import save_image
from helpers import assert_one_line_error, random_inception_state

NET = '{"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "mid_attention": false}'


def make_folder_run(root, per_class: int):
    """A tiny conditional run on a folder of two learnable classes (bright left or right half, 8 x 8)."""
    rng = np.random.default_rng(0)
    for label, side in (("left", 0), ("right", 1)):
        (root / "images" / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (8, 8)).astype(np.uint8)
            pixels[:, side * 4:(side + 1) * 4] += 180
            save_image(Image.fromarray(pixels), root / "images" / label / f"{i:02d}.png")
    run = root / "run"
    assert main(["train", "--data", f"folder:{root / 'images'}", "--conditional", "--steps", "2", "--batch-size",
                 "8", "--out", str(run), "--no-progress", "--net-kwargs", NET]) == 0
    return run


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    return make_folder_run(tmp_path_factory.mktemp("features"), 30)


def test_a_classifier_trained_on_the_runs_own_labels_scores_it_and_is_cached(folder_run, tmp_path, monkeypatch,
                                                                             capsys):
    monkeypatch.setenv("REDIFFUSE_CACHE", str(tmp_path / "cache"))
    flags = ["eval", str(folder_run), "--features", "classifier", "-n", "20", "--steps", "2",
             "--metrics", "fd,acc,prdc"]
    assert main(flags) == 0
    report = json.loads((folder_run / "eval" / "eval.json").read_text())
    assert report["classifier"]["kind"] == "labelled" and report["classifier"]["heldout_accuracy"] >= 0.9
    assert report["heldout_real"]["class_accuracy"] >= 0.9 and report["heldout_real"]["n"] == 12  # every 5th
    assert 0 <= report["samples"]["class_accuracy"] <= 1 and report["samples"]["fd"] > report["heldout_real"]["fd"]
    assert len(list((tmp_path / "cache" / "classifiers").glob("labelled-*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(classifier_cache, "train_classifier", no_training)
    assert main(flags) == 0  # the same data hash: the cached classifier
    capsys.readouterr()


@pytest.mark.slow  # about 20 s on this machine: `make test-all` runs it
def test_inception_features_from_a_weights_file(tmp_path):
    run = make_folder_run(tmp_path, 8)  # 16 images: Inception reads 299 x 299 (a third of a second each here)
    weights = tmp_path / "inception.safetensors"
    save_file(random_inception_state(), str(weights))
    assert main(["eval", str(run), "--features", f"inception:{weights}", "-n", "6", "--steps", "2",
                 "--metrics", "fd,acc"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    fd = {part: report[part]["fd"] for part in ("samples", "samples_at_heldout_n", "heldout_real")}
    print("\nFD on random Inception features:", {k: round(v, 3) for k, v in fd.items()})
    # a run trained 2 steps against real held-out images of the same number: FD above the real data's floor
    assert report["classifier"]["kind"] == "inception" and fd["samples_at_heldout_n"] > fd["heldout_real"]
    assert "class_accuracy" not in report["samples"]  # Inception has no digit classes: FD (and PRDC) only


def test_data_without_built_in_features_names_the_flags(folder_run, tmp_path, capsys):
    assert_one_line_error(capsys, main(["eval", str(folder_run), "-n", "4", "--steps", "2"]), 1,
                          "give --features classifier")
    assert_one_line_error(capsys, main(["eval", str(folder_run), "--features", "vgg", "-n", "4"]), 1,
                          "unknown --features 'vgg'")
    assert_one_line_error(capsys, main(["eval", str(folder_run), "--features", f"inception:{tmp_path / 'none.pth'}",
                                        "-n", "4", "--steps", "2"]), 1, "none.pth")
