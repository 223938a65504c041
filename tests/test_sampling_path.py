"""The one sampling path: a run is opened once (each checkpoint file hashed once, the network built once),
`Run.sample` equals `rediffuse sample` bit for bit for every kind of run, and `Run.sample_steps` streams the
reverse process step by step and stops when closed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import rediffuse
from rediffuse import checkpoint, modalities
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.objectives import gaussian
from rediffuse.train import train
from helpers import write_fsdd

IMAGES = dict(data="digits", net="unet", conditional=True, batch_size=16, steps=3, warmup_steps=1, log_every=2,
              checkpoint_every=100, ema_decay=0.9, progress=False,
              net_kwargs={"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": []})
QUIET = ["--no-progress"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("images") / "run"
    train(TrainConfig(out=str(out), **IMAGES))
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "t.txt").write_text("abcd" * 300 + "dcba" * 200)
    out = folder / "run"
    assert main(["train", "--objective", "masked", "--data", f"text:{folder / 't.txt'}@train", "--out", str(out),
                 "--block-length", "16", "--batch-size", "8", "--steps", "4", "--no-progress",
                 "--net-kwargs", '{"dim": 16, "depth": 1, "heads": 2}']) == 0
    return out


class Counts:
    """How often checkpoint files are hashed (by name) and networks are built on a real device."""

    def __init__(self, monkeypatch) -> None:
        self.hashed: list[int] = []
        self.builds = 0
        real_sha, real_build = hashlib.sha256, gaussian.build_net

        def sha(data=b""):
            self.hashed.append(len(data))
            return real_sha(data)

        def build(kind, config):
            if torch.get_default_device().type != "meta":  # the shape probe on the meta device allocates nothing
                self.builds += 1
            return real_build(kind, config)

        monkeypatch.setattr(checkpoint.hashlib, "sha256", sha)
        monkeypatch.setattr(gaussian, "build_net", build)


def test_one_sample_command_hashes_each_checkpoint_file_once_and_builds_one_network(image_run, tmp_path,
                                                                                   monkeypatch):
    files = json.loads(next(image_run.glob("ckpt-*/manifest.json")).read_text())["files"]
    counts = Counts(monkeypatch)
    assert main(["sample", str(image_run), "-n", "4", "--steps", "2", "--out", str(tmp_path / "a.png"), *QUIET]) == 0
    assert sorted(counts.hashed) == sorted(f["bytes"] for f in files.values())  # every file, each once
    assert counts.builds == 1
    counts.hashed.clear()
    counts.builds = 0
    run = rediffuse.load(image_run, device="cpu")
    run.sample(4, steps=2)
    run.sample(4, steps=3)
    assert sorted(counts.hashed) == sorted(f["bytes"] for f in files.values())
    assert counts.builds == 1


def _cli_npz(run, tmp_path, name, *flags):
    out = tmp_path / name
    assert main(["sample", str(run), "--out", str(out), *QUIET, *flags]) == 0
    folder = out if out.suffix == "" else None
    with np.load(folder / "samples.npz" if folder else out.with_suffix(".npz")) as arrays:
        return torch.from_numpy(arrays["samples"])


def test_run_sample_equals_the_sample_command_for_images_guidance_and_distilled_runs(image_run, tmp_path):
    run = rediffuse.load(image_run, device="cpu")
    cli = _cli_npz(image_run, tmp_path, "g.png", "-n", "6", "--class", "2", "--guidance", "2", "--seed", "5",
                   "--sampler", "euler-ancestral", "--steps", "4", "--batch-size", "4")
    assert torch.equal(run.sample(6, cond=2, guidance=2.0, seed=5, sampler="euler-ancestral", steps=4,
                                  batch_size=4), cli)
    student = tmp_path / "student"
    assert main(["distill", str(image_run), "--out", str(student), "--steps", "2", "--ct-stage-steps", "1",
                 "--log-every", "1", *QUIET]) == 0
    cli = _cli_npz(student, tmp_path, "s.png", "-n", "5", "--steps", "1", "--seed", "2")
    distilled = rediffuse.load(student, device="cpu")
    assert torch.equal(distilled.sample(5, steps=1, seed=2), cli)
    assert not torch.equal(distilled.sample(5, steps=2, seed=2), cli)  # a two-step draw differs


def test_run_sample_equals_the_sample_command_for_text(text_run, tmp_path):
    out = tmp_path / "t.jsonl"
    assert main(["sample", str(text_run), "-n", "5", "--seed", "3", "--batch-size", "2", "--prompt", "ab",
                 "--length", "12", "--out", str(out)]) == 0
    cli = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    run = rediffuse.load(text_run, device="cpu")
    ids = run.sample(5, seed=3, batch_size=2, prompt="ab", length=12)
    assert ids.shape == (5, 12) and run.texts(ids) == cli and all(t.startswith("ab") for t in cli)
    out = tmp_path / "i.txt"
    assert main(["sample", str(text_run), "-n", "3", "--infill", "ab__cd_", "--order", "confidence",
                 "--out", str(out)]) == 0
    filled = run.texts(run.sample(3, infill="ab__cd_", order="confidence"))
    assert out.read_text().split("\n=====\n") == [*filled[:2], filled[2] + "\n"]


def test_run_sample_equals_the_sample_command_for_a_log_mel_audio_run(tmp_path):
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(6), n=700)
    out = tmp_path / "run"
    assert main(["train", "--data", f"fsdd:{recordings}@train", "--conditional", "--clip-length", "4096",
                 "--audio-representation", "mel", "--steps", "2", "--batch-size", "2", "--out", str(out),
                 "--net-kwargs", '{"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "patch_size": 4, '
                                 '"mid_attention": false}', "--level-clips", "0", *QUIET]) == 0
    cli = _cli_npz(out, tmp_path, "clips", "-n", "3", "--steps", "2", "--seed", "4")
    run = rediffuse.load(out, device="cpu")
    clips = run.sample(3, steps=2, seed=4)
    assert clips.shape == (3, 1, 4096) and torch.equal(clips, cli)


def test_run_sample_equals_the_sample_command_with_a_tuned_plan(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run_dir), "--steps", "20", "--batch-size", "64",
                 "--net-kwargs", '{"hidden": 16, "depth": 1, "emb_dim": 8}', *QUIET]) == 0
    assert main(["tune-grid", str(run_dir), "--sampler", "euler", "--steps", "3", "-n", "8", "--evals", "6"]) == 0
    out = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "--sampler", "euler", "--steps", "3", "--spacing", "tuned", "-n", "7",
                 "--out", str(out), *QUIET]) == 0
    run = rediffuse.load(run_dir, device="cpu")
    tuned = run.sample(7, sampler="euler", steps=3, spacing="tuned")
    assert torch.equal(tuned, torch.from_numpy(np.load(out)))
    assert not torch.equal(tuned, run.sample(7, sampler="euler", steps=3))  # the plan's grid is not the default


def test_sample_steps_streams_each_step_and_returns_the_samples(image_run, text_run):
    run = rediffuse.load(image_run, device="cpu")
    stream = run.sample_steps(5, cond=1, sampler="euler", steps=4, seed=3, batch_size=3)
    steps = []
    with pytest.raises(StopIteration) as done:
        while True:
            steps.append(next(stream))
    assert [(s.index, s.first) for s in steps] == [(i, 0) for i in range(4)] + [(i, 3) for i in range(4)]
    levels = [s.level for s in steps[:4]]
    assert levels == sorted(levels, reverse=True) and all(s.x.shape == s.estimate.shape == (3, 1, 8, 8)
                                                          for s in steps[:4])
    assert torch.equal(done.value.value.samples, run.sample(5, cond=1, sampler="euler", steps=4, seed=3, batch_size=3))
    text = rediffuse.load(text_run, device="cpu")
    states = list(text.sample_steps(2, length=8, seed=1))
    masks = [int((s.x == text.model.mask_id).sum()) for s in states]
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0 and len(states) <= 8
    assert all(int((s.estimate == text.model.mask_id).sum()) == 0 for s in states)  # every mask has a guess


def test_closing_the_stream_stops_the_draw():
    calls = []

    class Slow(torch.nn.Module):
        def forward(self, x, sigma):
            calls.append(sigma)
            return torch.zeros_like(x)

    from rediffuse.sampling.stream import stream
    from rediffuse.samplers import generation
    from rediffuse.core.schedules import get
    from rediffuse.samplers.request import Step

    def draw(on_step):
        cb = lambda info: on_step(Step(info["i"], info["sigma"], info["x"], info["denoised"]))  # noqa: E731
        return generation.generate(Slow(), get("edm"), (2,), n=1, sampler="euler", steps=50, callback=cb)

    it = stream(draw)
    next(it), next(it)
    it.close()
    assert len(calls) <= 4  # the draw stopped within a step or two of the reader leaving


def test_fit_with_labels_trains_a_conditional_model_unless_told_otherwise(tmp_path):
    x, y = torch.rand(24, 1, 8, 8) * 2 - 1, torch.arange(24) % 3
    small = dict(net="unet", steps=1, batch_size=8, progress=False, warmup_steps=1,
                 net_kwargs={"channels": 8, "channel_mults": [1], "num_res_blocks": 1, "attn_resolutions": []})
    assert rediffuse.fit((x, y), tmp_path / "c", **small).num_classes == 3
    assert rediffuse.fit((x, y), tmp_path / "u", conditional=False, **small).num_classes is None


def test_every_kind_of_data_has_one_modality_object():
    assert set(modalities.MODALITIES) == {"points", "images", "audio", "text", "table"}
    for name, modality in modalities.MODALITIES.items():
        assert modality.name == name and modality.default_n >= 1 and modality.a_run.endswith(" run")
