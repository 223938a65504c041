"""The level calibration of log-mel audio runs: the matching gain, the codec's gain and reference level, and a
trained run whose own draws, with the calibration's seed, come out at its training clips' level."""

from __future__ import annotations

import json
import math

import pytest
import torch

import rediffuse
from rediffuse.audio.codec import MelCodec, codec_from_config
from rediffuse.audio.levels import Levels, levels, matching_gain
from rediffuse.config import TrainConfig
from rediffuse.train import train
from rediffuse.train.level import SEED
from rediffuse.cli import main
from helpers import assert_one_line_error, voice, write_fsdd

MEL_NET = {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "patch_size": 4, "mid_attention": False}


def clips(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Voiced clips of different loudness and length, [n, 1, 8192] at 8 kHz."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([voice(0.05 + 0.3 * float(torch.rand((), generator=g)), 0.1 * (i % 3), 0.5 + 0.1 * i / n)
                      for i in range(n)])


def test_the_gain_undoes_a_scaling_and_splits_a_crest_mismatch_evenly():
    real = levels(clips())
    for c in (0.25, 1.0, 3.0):
        assert matching_gain(levels(clips() * c), real.rms, real.peak) == pytest.approx(1 / c, rel=1e-6)
    # a crest factor 1.21x the reference's: after the gain, RMS and peak miss by the same factor 1.1, either way
    gain = matching_gain(Levels(rms=0.5, peak=1.21, silence_db=-90), rms=1.0, peak=2.0)
    assert 0.5 * gain == pytest.approx(1 / 1.1) and 1.21 * gain / 2.0 == pytest.approx(1.1)
    with pytest.raises(ValueError, match="must be positive"):
        matching_gain(Levels(rms=0.0, peak=0.0, silence_db=-120), 1.0, 1.0)


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
    measured = Levels(rms=0.06, peak=0.45, silence_db=-90)
    assert louder.calibrated(measured).gain == pytest.approx(1.7 * math.sqrt(0.03 / 0.06 * 0.3 / 0.45), rel=1e-5)
    assert plain.calibrated(measured) == plain  # no reference, nothing to match


def test_a_trained_log_mel_run_draws_at_its_training_clips_level(tmp_path):
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(6), n=700)
    out = tmp_path / "run"
    config = TrainConfig(data=f"fsdd:{recordings}@train", out=str(out), conditional=True, clip_length=2048,
                         audio_representation="mel", steps=3, batch_size=4, warmup_steps=1, log_every=1,
                         level_clips=6, seed=2, progress=False, net_kwargs=MEL_NET,
                         sampling={"sampler": "euler", "steps": 4})
    train(config)
    run = rediffuse.load(out, device="cpu")
    codec = codec_from_config(run.spec.data.codec)
    real = rediffuse.data.audio.load_audio(f"fsdd:{recordings}@train", length=2048, rate=8000).x
    want = levels(real)
    assert codec.reference == (pytest.approx(want.rms, abs=1e-6), pytest.approx(want.peak, abs=1e-6))
    assert codec.gain != 1.0
    drawn = levels(run.sample(6, seed=SEED + 2, batch_size=6))  # the calibration's own draws, now with the gain
    assert drawn.peak < 1  # none clamped, so the gain acts exactly
    assert math.sqrt(drawn.rms / want.rms * drawn.peak / want.peak) == pytest.approx(1.0, abs=1e-4)
    assert drawn.rms / want.rms == pytest.approx(want.peak / drawn.peak, rel=1e-4)


def test_a_negative_number_of_calibration_clips_is_a_one_line_error(tmp_path, capsys):
    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(3), n=700)
    code = main(["train", "--data", f"fsdd:{recordings}@train", "--audio-representation", "mel", "--out",
                 str(tmp_path / "run"), "--steps", "1", "--level-clips", "-1", "--no-progress"])
    assert_one_line_error(capsys, code, 2, "level_clips must be an integer >= 0, got -1")
    assert not (tmp_path / "run").exists()
