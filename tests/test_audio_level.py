"""The level calibration of log-mel audio runs: geometric-mean levels, the matching gain, the codec's gain and
reference level, and a trained run whose own draws, with the calibration's seed, come out at its training clips'
level."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import rediffuse
from rediffuse.audio.codec import MelCodec, codec_from_config
from rediffuse.audio.levels import clip_peak, clip_rms, geometric_levels, matching_gain
from rediffuse import modalities
from rediffuse.config import TrainConfig
from rediffuse.objectives.consistency import run_grid
from rediffuse.samplers.request import SamplingRequest
from rediffuse.train import train
from rediffuse.train.level import SEED, with_codec
from rediffuse.cli import main
from helpers import assert_one_line_error, voice, write_fsdd

MEL_NET = {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "patch_size": 4, "mid_attention": False}


def clips(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Voiced clips of different loudness and length, [n, 1, 8192] at 8 kHz."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([voice(0.05 + 0.3 * float(torch.rand((), generator=g)), 0.1 * (i % 3), 0.5 + 0.1 * i / n)
                      for i in range(n)])


def test_geometric_levels_are_the_exp_of_the_mean_log_and_skip_silence():
    x = clips()
    rms, peak = geometric_levels(torch.cat([x, torch.zeros(2, 1, 8192)]))
    assert rms == pytest.approx(float(clip_rms(x).log().mean().exp()), rel=1e-12)
    assert peak == pytest.approx(float(clip_peak(x).log().mean().exp()), rel=1e-12)
    assert geometric_levels(3 * x)[0] == pytest.approx(3 * rms, rel=1e-6)
    with pytest.raises(ValueError, match="every clip is silent"):
        geometric_levels(torch.zeros(3, 1, 64))


def test_the_gain_undoes_a_scaling_and_splits_a_crest_mismatch_evenly():
    real = geometric_levels(clips())
    for c in (0.25, 1.0, 3.0):
        assert matching_gain(geometric_levels(clips() * c), real) == pytest.approx(1 / c, rel=1e-6)  # float32 clips
    # a crest factor 1.21x the reference's: after the gain, RMS and peak miss by the same factor 1.1, either way
    gain = matching_gain((0.5, 1.21), (1.0, 2.0))
    assert 0.5 * gain == pytest.approx(1 / 1.1) and 1.21 * gain / 2.0 == pytest.approx(1.1)
    with pytest.raises(ValueError, match="must be positive"):
        matching_gain((0.0, 0.0), (1.0, 1.0))


def test_the_codec_gain_scales_the_decoded_waveform_and_survives_json():
    x = clips(3) * 0.5  # quiet enough that no sample reaches the clamp
    plain = MelCodec(rate=8000, length=8192)
    louder = MelCodec(rate=8000, length=8192, gain=1.7, reference=(0.03, 0.3))
    images = plain.encode(x)
    assert torch.allclose(louder.decode(images), 1.7 * plain.decode(images), atol=1e-6)
    back = codec_from_config(json.loads(json.dumps(louder.config())))
    assert back == louder and back.reference == (0.03, 0.3)
    old = {k: v for k, v in plain.config().items() if k not in ("gain", "reference")}  # a run from before
    assert torch.equal(codec_from_config(old).decode(images), plain.decode(images))
    measured = (0.06, 0.45)
    assert louder.calibrated(measured).gain == pytest.approx(1.7 * math.sqrt(0.03 / 0.06 * 0.3 / 0.45), rel=1e-5)
    assert plain.calibrated(measured) == plain  # no reference, nothing to match


def test_a_trained_log_mel_run_draws_at_its_training_clips_level(tmp_path, capsys):
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(6), n=700)
    out = tmp_path / "run"
    config = TrainConfig(data=f"fsdd:{recordings}@train", out=str(out), conditional=True, clip_length=2048,
                         audio_representation="mel", steps=3, batch_size=4, warmup_steps=1, log_every=1,
                         level_clips=6, seed=2, progress=True, net_kwargs=MEL_NET,
                         sampling={"sampler": "euler", "steps": 4})
    train(config)
    told = capsys.readouterr().err
    assert "level: drawing 6 clips (euler, 4 steps" in told and "level: gain" in told
    run = rediffuse.load(out, device="cpu")
    codec = codec_from_config(run.spec.data.codec)
    real = rediffuse.data.audio.load_audio(f"fsdd:{recordings}@train", length=2048, rate=8000).x
    want = geometric_levels(real)
    assert codec.reference == (pytest.approx(want[0], abs=1e-6), pytest.approx(want[1], abs=1e-6))
    assert codec.gain != 1.0
    drawn = run.sample(6, seed=SEED + 2, batch_size=6)  # the calibration's own draws, now with the gain
    # the same draws decoded without the gain (the path `rediffuse sample` takes, with the codec's gain reset)
    plain = with_codec(run.spec, dataclasses.replace(codec, gain=1.0))
    request = SamplingRequest(n=6, sampler="euler", steps=4, seed=SEED + 2, batch_size=6, labels=torch.arange(6) % 2)
    raw = modalities.of(plain).draw(run.model, plain, request, run_grid(plain, "euler", 4)).samples
    assert codec.gain == pytest.approx(matching_gain(geometric_levels(raw), want), rel=1e-5)
    unclamped = (raw.abs().amax((1, 2)) < 1) & (drawn.abs().amax((1, 2)) < 1)
    assert int(unclamped.sum()) >= 3  # the gain scales every clip the clamp leaves alone
    torch.testing.assert_close(drawn[unclamped], codec.gain * raw[unclamped], rtol=1e-5, atol=1e-7)


def test_a_negative_number_of_calibration_clips_is_a_one_line_error(tmp_path, capsys):
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(3), n=700)
    code = main(["train", "--data", f"fsdd:{recordings}@train", "--audio-representation", "mel", "--out",
                 str(tmp_path / "run"), "--steps", "1", "--level-clips", "-1", "--no-progress"])
    assert_one_line_error(capsys, code, 2, "level_clips must be an integer >= 0, got -1")
    assert not (tmp_path / "run").exists()
