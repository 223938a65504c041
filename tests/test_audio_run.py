"""An audio run end to end: a 1-D UNet trains on WAVs, checkpoints, resumes bit-exactly and samples to WAV files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.train import train
from helpers import AUDIO_NET, assert_one_line_error, assert_same_state, write_fsdd


def config(data: str, out, steps: int) -> TrainConfig:
    return TrainConfig(data=data, out=str(out), steps=steps, conditional=True, clip_length=512, batch_size=8,
                       warmup_steps=2, log_every=2, checkpoint_every=100, ema_decay=0.9, progress=False,
                       net_kwargs=AUDIO_NET)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdd") / "recordings"
    write_fsdd(folder, digits=range(3), speakers=("ann",), indices=range(8), n=700)
    return folder


def test_audio_resume_equals_uninterrupted(tmp_path, recordings):
    data = f"fsdd:{recordings}@train"
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config(data, whole, 4))
    train(config(data, split, 2))
    train(config(data, split, 4), resume=True)
    assert_same_state(whole, split)
    manifest = json.loads(next(whole.glob("ckpt-*/manifest.json")).read_text())
    model = manifest["meta"]["model"]
    assert model["net"] == "unet1d" and model["data"]["rate"] == 8000 and model["data"]["shape"] == [1, 512]


def test_train_then_sample_wavs_npz_and_pictures(tmp_path, recordings, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", f"fsdd:{recordings}@train", "--conditional", "--clip-length", "512",
                 "--steps", "3", "--batch-size", "8", "--out", str(run), "--no-progress",
                 "--net-kwargs", json.dumps(AUDIO_NET)]) == 0
    assert (run / "loss.png").is_file()
    out = tmp_path / "clips"
    assert main(["sample", str(run), "--class", "2", "-n", "4", "--steps", "3", "--seed", "1",
                 "--out", str(out)]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == [f"sample-{i:04d}-class2.wav" for i in range(4)]
    info = sf.info(str(wavs[0]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (8000, 1, 512, "PCM_16")
    with np.load(out / "samples.npz") as arrays:
        assert arrays["samples"].shape == (4, 1, 512) and arrays["labels"].tolist() == [2] * 4
        assert int(arrays["rate"]) == 8000
        pcm, _ = sf.read(str(wavs[1]), dtype="float64")
        assert np.abs(pcm - arrays["samples"][1, 0]).max() <= 1 / 32768 + 1e-9  # the WAV is the float clip in 16 bits
    assert (out / "samples.png").is_file() and (out / "spectrograms.png").is_file()
    single = tmp_path / "one.wav"
    assert main(["sample", str(run), "-n", "1", "--steps", "2", "--out", str(single)]) == 0
    assert single.is_file() and (tmp_path / "one.npz").is_file()
    capsys.readouterr()
    for flags, fragment in [(["--class", "12"], "--class must be in 0..2"),
                            (["--out", str(tmp_path / "x.mp3")], "must be a folder or end in .wav"),
                            (["--trajectory", str(tmp_path / "t.gif")], "--trajectory is for points"),
                            (["--prompt", "a"], "are for text runs")]:
        assert_one_line_error(capsys, main(["sample", str(run), *flags]), 2, fragment)


def test_bad_audio_data_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--data", f"audio:{tmp_path / 'empty'}", "--out", str(tmp_path / "r"), "--steps", "1",
                 "--no-progress"])
    assert_one_line_error(capsys, code, 1, "no audio files")


def test_fsdd_wave_preset_trains_and_samples_with_its_scaled_noise_levels(tmp_path, recordings, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "fsdd-wave", "--data", f"fsdd:{recordings}@train", "--out", str(run),
                 "--steps", "3", "--clip-length", "512", "--batch-size", "4", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["net"], config["minutes"], config["schedule_kwargs"]["p_mean"]) == ("unet1d", 20.0, -3.73)
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "3", "--steps", "2", "--class", "1", "--out", str(out)]) == 0
    assert len(list(out.glob("sample-*-class1.wav"))) == 3


def test_fsdd_fast_preset_learns_log_mel_images_and_samples_clips(tmp_path, recordings, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "fsdd-fast", "--data", f"fsdd:{recordings}@train", "--out", str(run),
                 "--steps", "2", "--batch-size", "4", "--no-progress", "--level-clips", "2"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["net"], config["audio_representation"], config["minutes"]) == ("unet", "mel", 20.0)
    manifest = json.loads(next(run.glob("ckpt-*/manifest.json")).read_text())
    codec = manifest["meta"]["model"]["data"]["codec"]
    assert codec["gain"] != 1.0 and len(codec["reference"]) == 2  # calibrated on 2 clips drawn as recommended
    out = tmp_path / "s"
    assert main(["sample", str(run), "-n", "2", "--steps", "2", "--class", "1", "--out", str(out)]) == 0
    with np.load(out / "samples.npz") as arrays:
        assert arrays["samples"].shape == (2, 1, 8192)
