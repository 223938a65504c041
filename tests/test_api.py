"""The Python API: fit on tensors, pairs, Datasets and DataLoaders; load; Run.sample = `rediffuse sample`;
save_pretrained / from_pretrained folders; callbacks; and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rediffuse
from rediffuse.cli import main
from rediffuse.data.dataset import data_std
from rediffuse.errors import CheckpointError, ConfigError, UsageError
from helpers import SMALL, assert_same_state, final_checkpoint, images


class Pairs(torch.utils.data.Dataset):
    """A Dataset of (image, label) pairs that counts its reads."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return self.x[i].clone(), int(self.y[i])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return rediffuse.fit(images(), tmp_path_factory.mktemp("api") / "run", conditional=True, **SMALL)


def test_run_sample_gives_the_numbers_rediffuse_sample_writes(fitted, tmp_path):
    assert fitted.num_classes == 3 and fitted.config.conditional and fitted.spec["data"]["shape"] == [1, 8, 8]
    out = tmp_path / "s.png"
    assert main(["sample", str(fitted.path), "-n", "5", "--class", "2", "--steps", "3", "--seed", "4",
                 "--sampler", "euler", "--out", str(out)]) == 0
    with np.load(tmp_path / "s.npz") as arrays:
        assert np.array_equal(arrays["samples"], fitted.sample(5, cond=2, sampler="euler", steps=3, seed=4).numpy())
    guided = fitted.sample(4, cond=[0, 1, 2, 0], steps=2, guidance=2.0)
    assert guided.shape == (4, 1, 8, 8) and guided.abs().max() <= 1
    assert torch.equal(rediffuse.load(fitted.path).sample(3, steps=2), fitted.sample(3, steps=2))


def test_pretrained_folder_is_self_contained_and_samples_the_same(fitted, tmp_path):
    folder = fitted.denoiser.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["format"], config["net"], config["data"]["shape"]) == ("rediffuse-pretrained", "unet", [1, 8, 8])
    assert config["schedule"] == fitted.denoiser.schedule.config()
    for run in (rediffuse.from_pretrained(folder), rediffuse.load(folder)):
        assert torch.equal(run.sample(4, cond=1, steps=3, seed=2), fitted.sample(4, cond=1, steps=3, seed=2))
    out = tmp_path / "p.png"
    assert main(["sample", str(folder), "-n", "4", "--class", "1", "--steps", "3", "--seed", "2",
                 "--out", str(out)]) == 0
    with np.load(tmp_path / "p.npz") as arrays:
        assert np.array_equal(arrays["samples"], fitted.sample(4, cond=1, steps=3, seed=2).numpy())


def test_a_network_from_ones_own_loop_saves_with_its_shape_read_off_the_network(tmp_path):
    from rediffuse.core import schedules
    from rediffuse.core.denoisers import wrap
    from rediffuse.nets import UNet2D

    net = UNet2D(image_size=8, image_width=16, channels=8, channel_mults=[1, 2], num_res_blocks=1)
    folder = wrap(net, "edm", schedules.get("edm")).save_pretrained(tmp_path / "own")
    run = rediffuse.from_pretrained(folder)
    assert run.spec["data"] == {"kind": "images", "shape": [1, 8, 16], "num_classes": None}
    assert run.sample(2, steps=2).shape == (2, 1, 8, 16)


def test_a_streamed_dataset_trains_exactly_as_the_same_tensor(tmp_path):
    x, y = images()
    pairs = Pairs(x, y)
    streamed = rediffuse.fit(pairs, tmp_path / "stream", conditional=True, sigma_data=0.5, **SMALL)
    whole = rediffuse.fit((x, y), tmp_path / "whole", conditional=True, sigma_data=0.5, **SMALL)
    # the same state (their data names differ)
    a, b = final_checkpoint(tmp_path / "stream"), final_checkpoint(tmp_path / "whole")
    assert a.step == b.step == 4
    for part in ("model", "ema", "optimizer", "rng"):
        assert all(torch.equal(v, b.tensors[part][k]) for k, v in a.tensors[part].items()), part
    assert pairs.reads == len(x) + 4 * 8  # one pass for labels, shape and moments; then only each batch
    auto = rediffuse.fit(pairs, tmp_path / "auto", conditional=True, **{**SMALL, "steps": 1})
    assert auto.denoiser.sigma_data == pytest.approx(data_std(x), rel=1e-9)
    assert streamed.config.data.startswith("dataset:Pairs:40") and whole.config.data.startswith("tensor:[40, 1, 8, 8]")


def test_a_dataloader_gives_its_dataset_and_batch_size_and_callbacks_get_the_log(tmp_path):
    x, _ = images()
    records = []
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4, shuffle=True)
    unbatched = {k: v for k, v in SMALL.items() if k != "batch_size"}
    run = rediffuse.fit(loader, tmp_path / "r", callbacks=[records.append], **unbatched)
    assert run.config.batch_size == 4 and run.num_classes is None
    logged = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert records == [r for r in logged if "step" in r and r.get("step") in (2, 4)] and len(records) == 2


def test_fit_resumes_a_run_on_the_same_tensor(tmp_path):
    x, y = images()
    rediffuse.fit((x, y), tmp_path / "whole", conditional=True, **SMALL)
    rediffuse.fit((x, y), tmp_path / "split", conditional=True, **{**SMALL, "steps": 2})
    rediffuse.fit((x, y), tmp_path / "split", conditional=True, resume=True, **SMALL)
    assert_same_state(tmp_path / "whole", tmp_path / "split")


def test_resuming_on_another_dataset_of_the_same_type_and_length_is_refused(tmp_path):
    x, y = images()
    rediffuse.fit(Pairs(x, y), tmp_path / "r", conditional=True, **{**SMALL, "steps": 2})
    relabelled = Pairs(x, (y + 1) % 3)
    with pytest.raises(ConfigError, match="cannot resume with a different data"):
        rediffuse.fit(relabelled, tmp_path / "r", conditional=True, resume=True, **SMALL)
    with pytest.raises(ConfigError, match="cannot resume with a different data"):
        rediffuse.fit(Pairs(x.flip(-1), y), tmp_path / "r", conditional=True, resume=True, **SMALL)
    rediffuse.fit(Pairs(x.clone(), y.clone()), tmp_path / "r", conditional=True, resume=True, **SMALL)


def test_mel_audio_from_memory_is_refused_before_the_data_is_read(tmp_path):
    clips = Pairs(torch.zeros(4, 1, 256), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="audio_representation 'mel' reads audio files"):
        rediffuse.fit(clips, tmp_path / "m", audio_representation="mel", **SMALL)
    assert clips.reads == 0


def test_non_square_points_and_clip_tensors_fit(tmp_path):
    wide = rediffuse.fit(torch.rand(16, 1, 8, 16) * 2 - 1, tmp_path / "wide", **SMALL)
    assert wide.sample(2, steps=2).shape == (2, 1, 8, 16)
    points = rediffuse.fit(torch.randn(64, 2), tmp_path / "points", **{**SMALL, "net": "mlp", "net_kwargs": {}})
    assert points.spec["data"]["kind"] == "points" and points.sample(3, steps=2).shape == (3, 2)


def test_bad_input_names_the_problem_and_the_fix(tmp_path, fitted):
    x, _ = images()
    mixed = [x[0], x[1, :, :4]]

    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return mixed[i]

    with pytest.raises(ConfigError, match=r"item 1 has shape \[1, 4, 8\] but item 0 has \[1, 8, 8\].*resize"):
        rediffuse.fit(Mixed(), tmp_path / "m", **SMALL)
    with pytest.raises(ConfigError, match="cannot train on a list"):
        rediffuse.fit([1, 2, 3], tmp_path / "l", **SMALL)
    with pytest.raises(ConfigError, match="labels must be 40 non-negative integers"):
        rediffuse.fit((x, torch.rand(40)), tmp_path / "f", **SMALL)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        rediffuse.fit(torch.full((4, 2), float("nan")), tmp_path / "n", **SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json, so it is not a save_pretrained folder"):
        rediffuse.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="is not a pretrained model's config"):
        rediffuse.from_pretrained(fitted.path)  # a run folder's config.json is a training config
    with pytest.raises(UsageError, match=r"cond must be in 0..2, got 7"):
        fitted.sample(3, cond=7)
    with pytest.raises(UsageError, match=r"cond must be one class or 3 classes in 0..2"):
        fitted.sample(3, cond=[0, 1, 3])
    folder = fitted.denoiser.save_pretrained(tmp_path / "broken")
    (folder / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="cannot read model.safetensors"):
        rediffuse.from_pretrained(folder)


def test_sample_into_a_folder_writes_one_png_per_image_beside_the_grid(fitted, tmp_path):
    from PIL import Image

    out = tmp_path / "fid"
    assert main(["sample", str(fitted.path), "-n", "4", "--steps", "2", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"sample-{i:05d}-class{i % 3}.png" for i in range(4)]  # only the images: what FID tools read
    assert (tmp_path / "fid.png").is_file() and (tmp_path / "fid.npz").is_file()
    with np.load(tmp_path / "fid.npz") as arrays, Image.open(out / names[1]) as image:
        assert image.size == (8, 8) and image.mode == "L"
        expected = np.round((arrays["samples"][1, 0] + 1) * 127.5).clip(0, 255)
        assert np.abs(np.asarray(image, dtype=np.float64) - expected).max() <= 1
    assert main(["sample", str(fitted.path), "-n", "4", "--steps", "2", "--out", str(out)]) == 2  # no overwrite


def test_hflip_mirrors_a_seeded_half_of_each_batch():
    from rediffuse.config import TrainConfig
    from rediffuse.data.dataset import Data
    from rediffuse.distributed import SINGLE
    from rediffuse.train.batches import StepBatches

    x = torch.arange(64 * 4, dtype=torch.float32).view(16, 1, 4, 4)
    data = Data(x, None, "images")
    config = TrainConfig(data="x", out="unused", batch_size=16, hflip=True)
    objective = rediffuse.objectives.get(config)
    plain = StepBatches(data, TrainConfig(data="x", out="unused", batch_size=16), objective, torch.device("cpu"),
                        SINGLE)
    flipped = StepBatches(data, config, objective, torch.device("cpu"), SINGLE)
    model = objective.model(objective.spec(data), objective.build(objective.spec(data)))
    for step in (0, 1):
        a, b = plain.get(step, model)[0].x, flipped.get(step, model)[0].x
        mirrored = [bool(torch.equal(b[i], a[i].flip(-1))) for i in range(16)]
        kept = [bool(torch.equal(b[i], a[i])) for i in range(16)]
        assert all(m or k for m, k in zip(mirrored, kept)) and 2 <= sum(mirrored) <= 14
        assert torch.equal(b, flipped.get(step, model)[0].x)  # the same flips again: seeded by (seed, step)
