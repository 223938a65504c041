"""Damaged checkpoints: truncated, bit-flipped or half-written files, a crash inside a save, wrong shapes or
metadata, and pickles are never taken as valid; resuming falls back to the newest checkpoint that verifies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from rediffuse import checkpoint
from rediffuse.checkpoint import CheckpointError
from rediffuse.cli import main
from rediffuse.config import TrainConfig
from rediffuse.runs import load_run
from rediffuse.train import train

from reliability_common import TINY, assert_bit_equal, final

CKPT = {**TINY, "checkpoint_every": 4, "log_every": 4, "keep_last": 3}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 12-step run (checkpoints at 4, 8, 12)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(TrainConfig(out=str(out), steps=12, **CKPT))
    return out


def _run_to(tmp_path: Path, steps: int) -> Path:
    out = tmp_path / "run"
    train(TrainConfig(out=str(out), steps=steps, **CKPT))
    return out


def _resume_to_12(out: Path) -> None:
    train(TrainConfig(out=str(out), steps=12, **CKPT), resume=True)


def _flip_byte(file: Path, offset: int = -3) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_manifest", "garble_manifest", "empty_file"])
def test_damaged_newest_checkpoint_is_skipped_on_resume(tmp_path, reference, capsys, damage):
    out = _run_to(tmp_path, 8)
    newest = out / "ckpt-00000008"
    weights = newest / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "flip":  # same size: only the sha256 notices
        _flip_byte(weights)
    elif damage == "drop_manifest":
        (newest / checkpoint.MANIFEST).unlink()
    elif damage == "garble_manifest":
        (newest / checkpoint.MANIFEST).write_text('{"format": "rediffuse-checkpoint", "vers')
    else:
        weights.write_bytes(b"")
    if damage == "flip":
        with pytest.raises(CheckpointError, match="sha256"):
            checkpoint.load(newest)
    else:
        assert checkpoint.latest(out).name == "ckpt-00000004"
    assert checkpoint.load_latest(out, warn=lambda message: None).step == 4
    _resume_to_12(out)  # continues from step 4 and still equals the uninterrupted run
    assert_bit_equal(final(out), final(reference))
    assert "skipping checkpoint ckpt-00000008" in capsys.readouterr().err  # every kind is named, never silent


def test_half_written_temp_files_are_ignored_and_cleaned(tmp_path, reference):
    out = _run_to(tmp_path, 8)
    partial = out / "ckpt-00000012"  # a save killed before its manifest landed
    partial.mkdir()
    (partial / ".model.safetensors.x1.tmp").write_bytes(b"\x00" * 100)
    (partial / "ema.safetensors").write_bytes((out / "ckpt-00000008" / "ema.safetensors").read_bytes()[:50])
    (out / "ckpt-00000008" / ".manifest.json.x2.tmp").write_text('{"format": ')
    (out / ".log.jsonl.x3.tmp").write_text("{")
    assert checkpoint.latest(out).name == "ckpt-00000008"
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint.load(partial)
    _resume_to_12(out)
    assert_bit_equal(final(out), final(reference))
    assert not list(out.rglob("*.tmp"))


def test_crash_inside_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, reference):
    real, writes = checkpoint.atomic_write, []

    def crashing_write(path, data):  # the 3rd file of the step-8 save never lands
        writes.append(Path(path).name)
        if Path(path).parent.name == "ckpt-00000008" and len([w for w in writes if w.endswith(".safetensors")]) > 6:
            raise OSError("simulated crash: disk full")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", crashing_write)
    with pytest.raises(CheckpointError, match="simulated crash.*no checkpoint was written at that step"):
        train(TrainConfig(out=str(tmp_path / "run"), steps=12, **CKPT))
    monkeypatch.setattr(checkpoint, "atomic_write", real)
    out = tmp_path / "run"
    assert checkpoint.latest(out).name == "ckpt-00000004" and not (out / "ckpt-00000008").exists()
    _resume_to_12(out)
    assert_bit_equal(final(out), final(reference))


def _rewrite_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
    edit(manifest)
    (folder / checkpoint.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["meta"]["model"]["net_config"].update(hidden=64), "does not fit the model"),
    (lambda m: m["meta"]["model"].update(net="transformer9"), "invalid model description"),
    (lambda m: m["meta"].pop("model"), "invalid model description"),
    (lambda m: m["meta"]["train_config"].update(steps="many"), "no valid training config"),
    (lambda m: m["files"].update({"../../etc/passwd.safetensors": m["files"]["ema.safetensors"]}), "bad entry"),
    (lambda m: m["files"]["ema.safetensors"].update(sha256="abc"), "bad entry"),
    (lambda m: m.update(version=99), "version 99 is not supported"),
])
def test_bad_metadata_is_a_one_line_error(tmp_path, capsys, edit, message):
    out = _run_to(tmp_path, 4)
    _rewrite_manifest(out / "ckpt-00000004", edit)
    with pytest.raises(CheckpointError, match=message):
        load_run(out / "ckpt-00000004")
    code = main(["sample", str(out / "ckpt-00000004"), "-n", "10", "--steps", "2", "--out", str(tmp_path / "s.npy")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_optimizer_state_of_another_model_is_refused(tmp_path):
    out = _run_to(tmp_path, 4)
    other = tmp_path / "other"
    train(TrainConfig(out=str(other), steps=4, **{**CKPT, "net_kwargs": {**CKPT["net_kwargs"], "hidden": 16}}))
    data = (other / "ckpt-00000004" / "optimizer.safetensors").read_bytes()
    (out / "ckpt-00000004" / "optimizer.safetensors").write_bytes(data)
    _rewrite_manifest(out / "ckpt-00000004", lambda m: m["files"]["optimizer.safetensors"].update(
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(CheckpointError, match="optimizer state does not fit the model"):
        _resume_to_12(out)


@pytest.mark.parametrize("name", ["model.pt", "weights.pkl", "run.ckpt", "notes.txt"])
def test_files_and_pickles_are_refused(tmp_path, capsys, name):
    path = tmp_path / name
    torch.save({"w": torch.zeros(2)}, path)  # a pickle: never opened
    code = main(["sample", str(path), "-n", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "safetensors" in err, err
    assert ("never unpickles" in err) == (name != "notes.txt")
    with pytest.raises(CheckpointError, match="safetensors"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_run(path)
