"""Audio loaders: WAV round trips at every PCM width, mixdown, resampling, crop/pad, the FSDD split, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rediffuse.data.audio import fit_length, fsdd_fields, load_audio, read_wav, resample_to, write_wav
from helpers import FSDD, tone, write_fsdd


def test_16_bit_round_trip_is_bit_exact(tmp_path):
    levels = np.array([-32768, -12345, -1, 0, 1, 777, 32767], dtype=np.int16)
    x = levels.astype(np.float32) / 32768
    write_wav(tmp_path / "a.wav", torch.from_numpy(x), 8000)
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16" and sf.info(str(tmp_path / "a.wav")).samplerate == 8000
    back = read_wav(tmp_path / "a.wav", 8000)
    assert np.array_equal(back, x)
    raw, _ = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    assert np.array_equal(raw, levels)


@pytest.mark.parametrize("subtype, step", [("PCM_U8", 2**-7), ("PCM_24", 2**-23), ("PCM_32", 2**-31),
                                           ("FLOAT", 0.0)])
def test_every_width_reads_on_the_same_scale(tmp_path, subtype, step):
    x = tone(300, 8000, 800, amplitude=0.9)
    sf.write(str(tmp_path / "w.wav"), x, 8000, subtype=subtype)
    back = read_wav(tmp_path / "w.wav", 8000)
    assert np.abs(back - x).max() <= step + 1e-7  # never mis-scaled: within one quantisation step


def test_float_samples_outside_the_unit_range_are_refused(tmp_path):
    sf.write(str(tmp_path / "loud.wav"), np.array([0.0, 1.5, -0.2], np.float32), 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"loud.wav holds float samples outside \[-1, 1\]"):
        read_wav(tmp_path / "loud.wav")


def test_stereo_is_mixed_down_or_refused(tmp_path):
    left, right = tone(200, 8000, 400), tone(500, 8000, 400, 0.25)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    assert np.allclose(read_wav(tmp_path / "st.wav"), (left + right) / 2, atol=1e-7)
    with pytest.raises(ValueError, match="st.wav has 2 channels"):
        read_wav(tmp_path / "st.wav", mixdown=False)


def test_resampling_a_pure_tone_keeps_its_frequency(tmp_path):
    sf.write(str(tmp_path / "t.wav"), tone(440, 44100, 44100), 44100, subtype="FLOAT")
    x = read_wav(tmp_path / "t.wav", 8000)
    assert len(x) == 8000  # one second at the new rate
    spectrum = np.abs(np.fft.rfft(x[1000:7000] * np.hanning(6000)))
    peak_hz = np.argmax(spectrum) * 8000 / 6000
    assert abs(peak_hz - 440) < 8000 / 6000
    assert abs(np.abs(x[1000:7000]).max() - 0.5) < 0.01  # the pass band keeps the amplitude
    with pytest.raises(ValueError, match="t.wav is at 44100 Hz, not 8000 Hz"):
        read_wav(tmp_path / "t.wav", 8000, resample=False)
    assert np.allclose(resample_to(tone(100, 8000, 800), 8000, 8000), tone(100, 8000, 800), atol=1e-6)


def test_fit_length_centre_crops_and_pads():
    x = np.arange(1, 11, dtype=np.float32)
    assert fit_length(x, 4).tolist() == [4, 5, 6, 7]
    assert fit_length(x, 14).tolist() == [0, 0, *range(1, 11), 0, 0]
    assert fit_length(x, 10).tolist() == x.tolist()


def test_fsdd_split_labels_and_lengths(tmp_path):
    write_fsdd(tmp_path / "rec")
    train = load_audio(f"fsdd:{tmp_path / 'rec'}@train", length=1024)
    held = load_audio(f"fsdd:{tmp_path / 'rec'}@heldout", length=1024)
    full = load_audio(f"fsdd:{tmp_path / 'rec'}", length=1024)
    assert train.x.shape == (3 * 2 * 2, 1, 1024) and held.x.shape == (3 * 2 * 5, 1, 1024) and len(full.x) == 42
    assert all(fsdd_fields(f)[2] >= 5 for f in train.files) and all(fsdd_fields(f)[2] < 5 for f in held.files)
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert all(int(y) == fsdd_fields(f)[0] for y, f in zip(held.labels, held.files))
    assert train.x.dtype == torch.float32 and train.x.abs().max() <= 1


def test_audio_folder_classes_from_sub_folders_and_the_project_split(tmp_path):
    for name, freq in [("hi", 900), ("lo", 150)]:
        (tmp_path / "set" / name).mkdir(parents=True)
        for i in range(5):
            write_wav(tmp_path / "set" / name / f"{i}.wav", tone(freq, 8000, 300), 8000)
    data = load_audio(f"audio:{tmp_path / 'set'}", length=256)
    assert data.class_names == ["hi", "lo"] and data.labels.tolist() == [0] * 5 + [1] * 5
    held = load_audio(f"audio:{tmp_path / 'set'}@heldout", length=256)
    assert held.files == ["hi/0.wav", "lo/0.wav"]  # file number % 5 == 0
    flat = load_audio(f"audio:{tmp_path / 'set' / 'hi'}", length=256)
    assert flat.labels is None and len(flat.x) == 5


def test_bad_folders_and_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        load_audio(f"audio:{tmp_path / 'empty'}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="no audio files"):
        load_audio(f"audio:{tmp_path / 'notes'}")
    with pytest.raises(ValueError, match="no FSDD recordings"):
        load_audio(f"fsdd:{tmp_path / 'notes'}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio(f"fsdd:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="unknown audio spec"):
        load_audio("wav:x")
    write_fsdd(tmp_path / "rec", digits=[1], speakers=["ann"], indices=range(2))
    (tmp_path / "rec" / "2_ann_0.wav").write_bytes(b"RIFF garbage")
    sf.write(str(tmp_path / "rec" / "3_ann_0.wav"), np.zeros(0, np.float32), 8000)
    with pytest.warns(UserWarning, match="skipped 2 unreadable audio file"):
        data = load_audio(f"fsdd:{tmp_path / 'rec'}", length=128)
    assert data.labels.tolist() == [1, 1]
    with pytest.raises(ValueError, match="2_ann_0.wav"):
        load_audio(f"fsdd:{tmp_path / 'rec'}", on_error="raise")


@pytest.mark.skipif(not FSDD.is_dir(), reason="the shared FSDD recordings are not here")
def test_the_real_fsdd_split_counts():
    train = load_audio(f"fsdd:{FSDD}@train")
    held = load_audio(f"fsdd:{FSDD}@heldout")
    assert (len(train.x), len(held.x)) == (2700, 300)
    assert train.x.shape[1:] == (1, 8192) and torch.bincount(held.labels).tolist() == [30] * 10
