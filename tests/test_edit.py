"""`rediffuse edit` and `invert` end to end on tiny runs: known pixels and coordinates back bit for bit, the verb
equal to `Run.edit`, SDEdit and inversion through the one sampling path, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import rediffuse
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.errors import UsageError
from rediffuse.train import train
from helpers import assert_one_line_error

NET = {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit") / "run"
    train(TrainConfig(data="digits", net="unet", conditional=True, batch_size=16, steps=3, warmup_steps=1,
                      log_every=2, ema_decay=0.9, progress=False, out=str(out), net_kwargs=NET))
    return out


def digit_png(path, value=200):
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 3:5] = value
    Image.fromarray(image).save(path)
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None] * 2 - 1


def test_edit_keeps_the_known_pixels_and_equals_run_edit(digits, tmp_path, capsys):
    original = digit_png(tmp_path / "in.png")
    out = tmp_path / "e"
    assert main(["edit", str(digits), "--input", str(tmp_path / "in.png"), "--box", "0,4,8,8", "-n", "3",
                 "--steps", "4", "--seed", "2", "--class", "1", "--out", str(out)]) == 0
    with np.load(out / "edits.npz") as arrays:
        results, mask = torch.from_numpy(arrays["results"]), torch.from_numpy(arrays["mask"])
    assert results.shape == (3, 1, 8, 8) and mask[0, 4:, :].all() and not mask[0, :4, :].any()
    assert torch.equal(results[:, :, :4], original[None, :, :4].expand(3, -1, -1, -1))  # bit for bit
    assert not torch.equal(results[0, :, 4:], results[1, :, 4:])  # each result its own draw
    assert (out / "edits.png").is_file()
    run = rediffuse.load(digits, device="cpu")
    again = run.edit(original[None].repeat(3, 1, 1, 1), mask, "smc", cond=1, steps=4, seed=2)
    assert torch.equal(again, results)
    redrawn = run.edit(original[None], None, "sdedit", strength=0.5, steps=4)
    assert redrawn.shape == (1, 1, 8, 8) and not torch.equal(redrawn, original[None])
    for method in ("replace", "reconstruct", "repaint"):
        kept = run.edit(original[None], mask[:1], method, steps=4, jump=2, resample=2)
        assert torch.equal(kept[0, :, :4], original[:, :4]), method


def test_invert_writes_noise_whose_round_trip_it_reports(digits, tmp_path, capsys):
    original = digit_png(tmp_path / "in.png")
    noise_file = tmp_path / "noise.npy"
    assert main(["invert", str(digits), "--input", str(tmp_path / "in.png"), "--steps", "8", "--solver", "heun",
                 "--out", str(noise_file)]) == 0
    assert "round trip (heun, 8 steps): RMS error" in capsys.readouterr().out
    noise = torch.from_numpy(np.load(noise_file))
    run = rediffuse.load(digits, device="cpu")
    assert noise.shape == (1, 1, 8, 8) and float(noise.std()) > 5  # at the schedule's top level (sigma 80)
    back = run.from_noise(noise, steps=8, solver="heun")
    assert float((back - original).abs().max()) < 0.5  # measured 0.10 under avx2, avx512 and scalar kernels


def test_points_edit_redraws_the_named_coordinates(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run_dir), "--steps", "4", "--batch-size", "32",
                 "--num-points", "256", "--net-kwargs", '{"hidden": 8, "depth": 1, "emb_dim": 4}',
                 "--no-progress"]) == 0
    np.save(tmp_path / "p.npy", np.array([[1.5, 0.0], [-2.0, 0.0]], dtype=np.float32))
    assert main(["edit", str(run_dir), "--input", str(tmp_path / "p.npy"), "--missing", "1", "--steps", "4",
                 "--method", "replace", "--out", str(tmp_path / "e")]) == 0
    with np.load(tmp_path / "e" / "edits.npz") as arrays:
        assert np.array_equal(arrays["results"][:, 0], [1.5, -2.0]) and np.isfinite(arrays["results"]).all()


@pytest.mark.parametrize("flags, message", [
    (["--box", "0,0,9,4"], "does not lie in the 8 x 8 images"),
    (["--box", "0,0,8,8"], "marks everything to redraw"),
    (["--mask", "MASK16"], "--mask is [16, 16] pixels, the run's images are [8, 8]"),
    (["--mask", "BLACK"], "marks nothing to redraw"),
    (["--method", "sdedit", "--strength", "1.5"], "--strength must be in (0, 1]"),
    (["--method", "sdedit", "--box", "0,0,4,4"], "sdedit redraws the whole input"),
    (["--input", "RGB", "--box", "0,0,4,4"], "holds shape [3, 8, 8], the run draws [1, 8, 8]"),
    (["--method", "smc"], "give a mask (or a box)"),
])
def test_bad_edits_are_one_line_errors_and_write_nothing(digits, tmp_path, capsys, flags, message):
    digit_png(tmp_path / "in.png")
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(tmp_path / "m16.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "black.png")
    np.save(tmp_path / "rgb.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))
    names = {"MASK16": tmp_path / "m16.png", "BLACK": tmp_path / "black.png", "RGB": tmp_path / "rgb.npy"}
    flags = [str(names.get(f, f)) for f in flags]
    if "--input" not in flags:
        flags = ["--input", str(tmp_path / "in.png"), *flags]
    code = main(["edit", str(digits), *flags, "--steps", "2", "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, 2, message)
    assert not (tmp_path / "out").exists()


def test_run_edit_refuses_an_unknown_method(digits):
    with pytest.raises(UsageError, match="unknown edit method 'paint'"):
        rediffuse.load(digits, device="cpu").edit(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8) > 0, "paint")


@pytest.mark.parametrize("route", ["waveform", "mel"])
def test_an_audio_region_is_redrawn_and_the_rest_of_the_clip_kept(tmp_path, capsys, route):
    import soundfile as sf

    from helpers import AUDIO_NET, tone, write_fsdd

    recordings = tmp_path / "recordings"
    write_fsdd(recordings, digits=range(2), speakers=("ann",), indices=range(6), n=700)
    run_dir, length = tmp_path / "run", 512 if route == "waveform" else 4096
    net = AUDIO_NET if route == "waveform" else {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                                                 "patch_size": 4, "mid_attention": False}
    assert main(["train", "--data", f"fsdd:{recordings}@train", "--conditional", "--clip-length", str(length),
                 "--audio-representation", route, "--steps", "2", "--batch-size", "2", "--out", str(run_dir),
                 "--no-progress", "--level-clips", "0", "--net-kwargs", __import__("json").dumps(net)]) == 0
    clip = tone(300, 8000, length)
    sf.write(tmp_path / "in.wav", clip, 8000, subtype="FLOAT")
    region = f"0.01:{length / 8000 / 2:.4f}"
    assert main(["edit", str(run_dir), "--input", str(tmp_path / "in.wav"), "--region", region, "-n", "2",
                 "--steps", "3", "--class", "1", "--out", str(tmp_path / "e")]) == 0
    with np.load(tmp_path / "e" / "edits.npz") as arrays:
        results, mask = arrays["results"], arrays["mask"]
    start, end = 80, round(length / 2)
    assert results.shape == (2, 1, length) and mask[0, start:end].all() and mask[0].sum() == end - start
    assert np.array_equal(results[:, 0, end:], np.repeat(clip[None, end:], 2, 0))  # the known samples, exactly
    assert not np.array_equal(results[0, 0, start:end], clip[start:end])
    assert (tmp_path / "e" / "edit-0001.wav").is_file() and (tmp_path / "e" / "spectrograms.png").is_file()
    sf.write(tmp_path / "fast.wav", clip, 16000)
    sf.write(tmp_path / "stereo.wav", np.stack([clip, clip], 1), 8000)
    for wav, message in [("fast.wav", "is at 16000 Hz, not 8000 Hz"), ("stereo.wav", "has 2 channels")]:
        code = main(["edit", str(run_dir), "--input", str(tmp_path / wav), "--region", region,
                     "--out", str(tmp_path / "bad")])
        assert_one_line_error(capsys, code, 2, message)
    code = main(["edit", str(run_dir), "--input", str(tmp_path / "in.wav"), "--region", "0.2:9",
                 "--out", str(tmp_path / "bad")])
    assert_one_line_error(capsys, code, 2, "lies outside the")
    assert not (tmp_path / "bad").exists()


def test_a_text_run_is_edited_by_filling_a_template_and_edits_stream(digits, tmp_path, capsys):
    import json

    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "t.txt").write_text("abcd" * 300 + "dcba" * 200)
    run_dir = folder / "run"
    assert main(["train", "--objective", "masked", "--data", f"text:{folder / 't.txt'}@train", "--out",
                 str(run_dir), "--block-length", "16", "--batch-size", "8", "--steps", "2", "--no-progress",
                 "--net-kwargs", '{"dim": 16, "depth": 1, "heads": 2}']) == 0
    assert main(["edit", str(run_dir), "--infill", "ab__cd_a", "-n", "3", "--out", str(tmp_path / "e")]) == 0
    texts = [json.loads(line)["text"] for line in (tmp_path / "e" / "edits.jsonl").read_text().splitlines()]
    assert len(texts) == 3 and all(t[:2] == "ab" and t[4:6] == "cd" and t[7] == "a" for t in texts)
    code = main(["edit", str(run_dir), "--input", str(tmp_path / "x.png"), "--out", str(tmp_path / "f")])
    assert_one_line_error(capsys, code, 2, "a text run is edited by filling a template")
    run = rediffuse.load(digits, device="cpu")
    x, mask = torch.zeros(2, 1, 8, 8), torch.arange(8)[None, None, :, None].expand(2, 1, 8, 8) >= 4
    stream = run.edit_steps(x, mask, "replace", sampler="euler", steps=4, batch_size=1)
    steps = []
    with pytest.raises(StopIteration) as done:
        while True:
            steps.append(next(stream))
    assert [(s.index, s.first) for s in steps] == [(i, b) for b in (0, 1) for i in range(4)]
    assert torch.equal(done.value.value.samples, run.edit(x, mask, "replace", sampler="euler", steps=4,
                                                          batch_size=1))
