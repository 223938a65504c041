"""Faults a new user meets (issue: nothing lost, ever): corrupt checkpoints, shared run folders, bad numbers."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import types

import pytest
import torch
from PIL import Image

from rediffuse import checkpoint
from rediffuse.cli import main
from rediffuse.data.images import ImageTooLargeError, load_image_folder
from rediffuse.errors import CheckpointError, NonFiniteError

MOONS = ["--data", "moons", "--num-points", "256", "--batch-size", "32", "--no-progress",
         "--net-kwargs", '{"hidden": 16, "depth": 1, "emb_dim": 8}']


def _save(run, step):
    g = torch.Generator().manual_seed(step)
    return checkpoint.save(run, step, {"model": {"w": torch.randn(8, generator=g)}}, {"step": step})


def _flip_byte(path):
    """Flip one byte in the middle of a checkpoint's model file, keeping its size."""
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[len(data) // 2 + 40] ^= 0xFF
    file.write_bytes(bytes(data))


def test_a_corrupt_checkpoint_of_the_right_size_is_not_complete(tmp_path):
    path = _save(tmp_path, 1)
    _flip_byte(path)
    assert not checkpoint.is_complete(path)
    assert "sha256" in checkpoint.problem(path)
    assert checkpoint.latest(tmp_path) is None


def test_pruning_keeps_what_it_wrote_and_never_a_corrupt_one_in_its_place(tmp_path):
    _save(tmp_path, 1)
    _flip_byte(_save(tmp_path, 3))  # a newer checkpoint, corrupt at its recorded size
    written = checkpoint.save(tmp_path, 2, {"model": {"w": torch.ones(8)}}, {}, keep=1)
    assert checkpoint.latest(tmp_path) == written and checkpoint.is_complete(written)
    assert not (tmp_path / "ckpt-00000001").exists()  # keep 1: the verified newest is the one just written


def test_resume_names_the_skipped_corrupt_checkpoint_and_keeps_the_good_ones(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *MOONS, "--out", str(run), "--steps", "4", "--checkpoint-every", "2"]) == 0
    _flip_byte(run / "ckpt-00000004")
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "6", "--keep-last", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint ckpt-00000004" in err and "sha256" in err
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt-00000006"]
    assert checkpoint.is_complete(run / "ckpt-00000006")


@pytest.mark.parametrize("damage", ["truncate", "manifest"])
def test_sampling_says_when_it_falls_back_to_an_older_checkpoint(tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert main(["train", *MOONS, "--out", str(run), "--steps", "4", "--checkpoint-every", "2"]) == 0
    newest = run / "ckpt-00000004"
    if damage == "truncate":
        (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:-7])
    else:
        (newest / "manifest.json").unlink()
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "4", "--steps", "2", "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipping checkpoint" in line]
    assert len(lines) == 1 and "ckpt-00000004" in lines[0]  # one line, naming it and why
    assert ("truncated" if damage == "truncate" else "no manifest.json") in lines[0]


def _hold_lock(run):
    """A child process that holds the run folder's lock until killed (it prints 'held' once it has it)."""
    code = ("import sys, time\nfrom rediffuse.train.lock import run_lock\n"
            f"with run_lock({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_training_into_a_locked_run_folder_fails_at_once(tmp_path, capsys):
    run = tmp_path / "run"
    child = _hold_lock(run)
    try:
        assert main(["train", *MOONS, "--out", str(run), "--steps", "2"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"in use by another training (pid {child.pid})" in err
        assert not checkpoint.list_checkpoints(run)
    finally:
        child.kill()
        child.wait()
    assert main(["train", *MOONS, "--out", str(run), "--steps", "2"]) == 0  # the dead holder's lock is gone


def test_a_file_given_as_out_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", *MOONS, "--out", str(target), "--steps", "2"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err and target.read_text() == "mine"


def _png(path, value, mode="L", size=(6, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_a_folder_loads_all_its_images_at_any_depth(tmp_path):
    for i in range(5):
        _png(tmp_path / "mixed" / f"top{i}.png", 10 * i)
    _png(tmp_path / "mixed" / "sub" / "deep" / "one.png", 200)
    (tmp_path / "mixed" / "empty").mkdir()
    with pytest.warns(UserWarning, match="both at its top level and in sub-folders"):
        x, y, names = load_image_folder(tmp_path / "mixed", size=None)
    assert x.shape == (6, 1, 6, 6) and set(y.tolist()) == {0} and names == ["mixed"]
    _png(tmp_path / "classes" / "a" / "x.png", 0)
    _png(tmp_path / "classes" / "b" / "deeper" / "y.png", 255)
    (tmp_path / "classes" / "c").mkdir()  # an empty class folder is no class
    x, y, names = load_image_folder(tmp_path / "classes", size=None)
    assert names == ["a", "b"] and y.tolist() == [0, 1] and x[:, 0, 0, 0].tolist() == [-1.0, 1.0]


def test_grey_stays_grey_unless_asked_and_colour_stays_colour(tmp_path):
    _png(tmp_path / "g" / "a.png", 128)
    assert load_image_folder(tmp_path / "g", size=None)[0].shape[1] == 1
    assert load_image_folder(tmp_path / "g", size=None, channels=3)[0].shape[1] == 3
    _png(tmp_path / "g" / "b.png", (1, 2, 3), mode="RGB")
    assert load_image_folder(tmp_path / "g", size=None)[0].shape[1] == 3  # mixed: all colour


def test_an_oversized_image_is_refused_before_decoding_with_a_hint(tmp_path, capsys):
    _png(tmp_path / "big" / "a.png", 0, size=(2000, 1200))
    with pytest.raises(ImageTooLargeError, match="over the 1024-pixel limit.*--image-size"):
        load_image_folder(tmp_path / "big", size=None)
    assert load_image_folder(tmp_path / "big", size=8)[0].shape == (1, 1, 8, 8)  # resized on load
    assert main(["train", "--data", str(tmp_path / "big"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--no-progress"]) == 2
    assert "--image-size" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--guidance", "--guidance=inf"])
def test_non_finite_guidance_is_refused_before_any_work(tmp_path, capsys, flag):
    run = tmp_path / "run"
    assert main(["train", *MOONS, "--out", str(run), "--steps", "2"]) == 0
    values = [flag, "nan"] if "=" not in flag else [flag]
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "2", *values]) == 2
    assert "expected a finite number" in capsys.readouterr().err
    assert main(["eval", str(run), *values]) == 2
    assert not (run / "eval").exists()  # nothing cached


@pytest.mark.parametrize("flags", [["--lr", "nan"], ["--label-dropout", "inf"],
                                   ["--schedule-kwargs", '{"sigma_max": NaN}'], ["--sigma-data", "nan"]])
def test_non_finite_config_values_are_usage_errors(tmp_path, capsys, flags):
    assert main(["train", *MOONS, "--out", str(tmp_path / "run"), "--steps", "1", *flags]) == 2
    assert "finite" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_non_finite_samples_are_never_written(tmp_path):
    def bad_denoiser(x, sigma, cond=None):
        return torch.full_like(x, float("nan"))

    from rediffuse.core.schedules import get
    from rediffuse.samplers.generation import generate, require_finite
    x = generate(bad_denoiser, get("edm"), (2,), n=3, steps=2)
    with pytest.raises(NonFiniteError, match="nothing was written"):
        require_finite(x)


def test_sample_never_overwrites_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *MOONS, "--out", str(run), "--steps", "2"]) == 0
    mine = tmp_path / "s_scatter.png"
    mine.write_bytes(b"my own picture")
    assert main(["sample", str(run), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s.npy")]) == 2
    assert "exists" in capsys.readouterr().err and mine.read_bytes() == b"my own picture"
    assert not (tmp_path / "s.npy").exists()
    assert main(["sample", str(run), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s.npy"), "--overwrite"]) == 0
    assert mine.read_bytes() != b"my own picture"


def test_a_manifest_edited_to_a_huge_network_fails_before_allocating(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *MOONS, "--out", str(run), "--steps", "2"]) == 0
    manifest = run / "ckpt-00000002" / "manifest.json"
    meta = json.loads(manifest.read_text())
    meta["meta"]["model"]["net_config"]["hidden"] = 2_000_000  # 4e12 weights: terabytes if it were built
    manifest.write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "s.npy")]) == 1
    assert "does not fit the model its manifest describes" in capsys.readouterr().err


def test_constant_data_is_a_one_line_error_before_training(tmp_path, capsys):
    _png(tmp_path / "flat" / "a.png", 7)
    _png(tmp_path / "flat" / "b.png", 7)
    assert main(["train", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "run"), "--steps", "1",
                 "--no-progress"]) == 2
    assert "constant" in capsys.readouterr().err


def test_a_full_disk_names_the_last_good_checkpoint_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    good = _save(tmp_path, 1)
    real = checkpoint.atomic_write
    calls = []

    def full(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    with pytest.raises(CheckpointError, match="no checkpoint was written at that step.*ckpt-00000001"):
        checkpoint.save(tmp_path, 2, {"model": {"w": torch.ones(2)}, "ema": {"w": torch.ones(2)}}, {})
    assert checkpoint.list_checkpoints(tmp_path) == [good]


def test_ctrl_c_while_starting_is_one_line(monkeypatch, capsys):
    class Interrupting(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "rediffuse.cli", Interrupting("rediffuse.cli"))
    from rediffuse.console import run
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 130 and capsys.readouterr().err == "rediffuse: interrupted\n"
