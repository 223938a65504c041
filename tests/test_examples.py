"""The scripts in examples/ run on tiny data (a few steps), as a user would start them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rediffuse.viz import save_image
from scripts import load_script


def example(name: str):
    """The example script `name` as a module."""
    return load_script(f"examples/{name}.py", f"example_{name}")


def test_train_on_a_tensor(tmp_path):
    x = example("train_on_a_tensor").main(["--steps", "3", "--out", str(tmp_path / "run")])
    assert x.shape == (8, 1, 16, 16) and (tmp_path / "run-model" / "config.json").is_file()


def test_train_on_a_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("circles", "squares"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(6):
            save_image(Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)),
                       tmp_path / "images" / label / f"{i}.png")
    run = example("train_on_a_folder").main([str(tmp_path / "images"), "--steps", "2", "--image-size", "8",
                                             "--out", str(tmp_path / "run")])
    assert run.num_classes == 2
    pngs = sorted((tmp_path / "run-samples").glob("*.png"))
    assert len(pngs) == 16 and (tmp_path / "run-samples.png").is_file()


def test_diffusers_samplers():
    pytest.importorskip("diffusers")
    out = example("diffusers_samplers").main(["--steps", "3", "-n", "2"])
    assert set(out) == {"dpmpp-2m", "unipc-bh2", "heun"}
    assert all(x.shape == (2, 1, 16, 16) and torch.isfinite(x).all() for x in out.values())
