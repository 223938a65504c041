"""Checkpoints: round trip, refusal of corrupt or partial ones, latest(), keep-last-K, optimizer state."""

import json
import os

import pytest
import torch

from rediffuse import checkpoint
from rediffuse.checkpoint import CheckpointError


def _tensors(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(4, 3, generator=g), "b": torch.arange(3.0), "n": torch.tensor(7)},
            "rng": {"cpu": torch.get_rng_state()}}


def _save(run, step, keep=None):
    return checkpoint.save(run, step, _tensors(step), {"note": "hello", "step_copy": step}, keep=keep)


def test_round_trip(tmp_path):
    path = _save(tmp_path, 5)
    assert path == tmp_path / "ckpt-00000005"
    ck = checkpoint.load(path)
    assert ck.step == 5 and ck.meta == {"note": "hello", "step_copy": 5}
    for part, group in _tensors(5).items():
        assert ck.tensors[part].keys() == group.keys()
        for k, v in group.items():
            assert torch.equal(ck.tensors[part][k], v) and ck.tensors[part][k].dtype == v.dtype
    only = checkpoint.load(path, parts=["model"])
    assert list(only.tensors) == ["model"]
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_lists_hashes(tmp_path):
    manifest = json.loads((_save(tmp_path, 1) / "manifest.json").read_text())
    assert manifest["format"] == "rediffuse-checkpoint" and manifest["step"] == 1
    assert set(manifest["files"]) == {"model.safetensors", "rng.safetensors"}
    assert all(len(info["sha256"]) == 64 for info in manifest["files"].values())


def test_corrupt_file_is_refused(tmp_path):
    path = _save(tmp_path, 1)
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[-3] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path)
    checkpoint.load(path, parts=["rng"])  # the intact part still loads


def test_truncated_file_is_refused_and_skipped(tmp_path):
    _save(tmp_path, 1)
    path = _save(tmp_path, 2)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    assert checkpoint.latest(tmp_path).name == "ckpt-00000001"


def test_missing_manifest_is_refused_and_skipped(tmp_path):
    _save(tmp_path, 1)
    path = _save(tmp_path, 2)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint.load(path)
    assert checkpoint.latest(tmp_path).name == "ckpt-00000001"


def test_bad_manifest_and_missing_folder(tmp_path):
    path = _save(tmp_path, 1)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt manifest"):
        checkpoint.load(path)
    (path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not a rediffuse checkpoint"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    assert checkpoint.latest(tmp_path) is None
    assert checkpoint.latest(tmp_path / "nope") is None


def test_missing_part_file_is_refused(tmp_path):
    path = _save(tmp_path, 3)
    (path / "rng.safetensors").unlink()
    assert not checkpoint.is_complete(path)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="has no 'ema.safetensors'"):
        checkpoint.load(_save(tmp_path, 4), parts=["ema"])


def test_latest_and_keep_last(tmp_path):
    for step in (10, 2, 30, 40, 50):
        _save(tmp_path, step, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-00000030", "ckpt-00000040",
                                                                      "ckpt-00000050"]
    assert checkpoint.latest(tmp_path).name == "ckpt-00000050"
    (tmp_path / "ckpt-00000060").mkdir()  # a save that died before its manifest
    (tmp_path / "ckpt-00000045").mkdir()
    assert checkpoint.latest(tmp_path).name == "ckpt-00000050"
    _save(tmp_path, 55, keep=2)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000050", "ckpt-00000055", "ckpt-00000060"]  # incomplete older ones pruned


def test_resaving_a_step_replaces_it(tmp_path):
    _save(tmp_path, 7)
    checkpoint.save(tmp_path, 7, {"model": {"w": torch.zeros(2)}}, {"v": 2})
    ck = checkpoint.load(tmp_path / "ckpt-00000007")
    assert ck.meta == {"v": 2} and torch.equal(ck.tensors["model"]["w"], torch.zeros(2))


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    checkpoint.atomic_write(target, b"first")
    checkpoint.atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["file.bin"]


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    x = torch.randn(16, 3)
    for _ in range(3):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    tensors, rest = checkpoint.flatten_optimizer(opt.state_dict())
    assert "state.0.exp_avg" in tensors and "state.3.exp_avg_sq" in tensors
    json.dumps(rest)  # the non-tensor rest is JSON
    checkpoint.save(tmp_path, 3, {"model": net.state_dict(), "optimizer": tensors}, {"optimizer": rest})
    ck = checkpoint.load(checkpoint.latest(tmp_path))
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net2.load_state_dict(ck.tensors["model"])
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1.0)
    opt2.load_state_dict(checkpoint.unflatten_optimizer(ck.tensors["optimizer"], ck.meta["optimizer"]))
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    for o in (opt, opt2):
        model = net if o is opt else net2
        o.zero_grad()
        model(x).pow(2).mean().backward()
        o.step()
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.equal(p, q)

