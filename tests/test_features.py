"""Tests for the feature extractors: the self-trained digit classifier, its cache, and the FID Inception-v3."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from rediffuse.evaluation.features import (
    CONFIGS,
    REQUIRED_ACCURACY,
    DigitClassifier,
    InceptionFeatures,
    InceptionV3,
    InceptionWeightsError,
    accuracy,
    cache_root,
    check_inception_weights,
    classify,
    convert_inception_weights,
    extract_features,
    load_inception,
    load_or_train_classifier,
    load_split,
    train_classifier,
)
from rediffuse.evaluation.features import cache as cache_module
from rediffuse.evaluation.features.inception import WEIGHTS_ENV, WEIGHTS_FILE
from rediffuse.evaluation.features.training import data_fingerprint, quick_settings, random_affine
from rediffuse.evaluation.metrics import frechet_distance
from helpers import random_inception_state

MNIST = Path("/work/shared/data/mnist")


# ---------------------------------------------------------------- classifier


def test_classifier_shapes_and_batching():
    torch.manual_seed(0)
    for kind, cfg in CONFIGS.items():
        model = DigitClassifier(cfg).eval()
        x = torch.rand(11, 1, cfg.image_size, cfg.image_size) * 2 - 1
        assert model(x).shape == (11, 10)
        feats = extract_features(model, x, batch_size=4)
        assert feats.shape == (11, cfg.feature_dim) and feats.dtype == torch.float32
        torch.testing.assert_close(feats, extract_features(model, x[:, 0], batch_size=500))  # [N, S, S] accepted
        assert torch.equal(classify(model, x, batch_size=3), model(x).argmax(1))
        with pytest.raises(ValueError, match=rf"\[N, 1, {cfg.image_size}, {cfg.image_size}\]"):
            extract_features(model, torch.zeros(2, 1, 16, 16))


def test_random_affine_identity_and_background():
    g = torch.Generator().manual_seed(0)
    x = torch.full((5, 1, 8, 8), -1.0)
    x[:, :, 3:5, 3:5] = 1.0
    assert random_affine(x, g, 0.0, 0.0, 0.0) is x
    y = random_affine(x, g, 1.0, 10.0, 0.1)
    assert y.shape == x.shape and y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    assert torch.equal(y[:, :, 0, 0], torch.full((5, 1), -1.0))  # background stays background
    shifted = random_affine(x, torch.Generator().manual_seed(1), 1.0)
    assert not torch.equal(shifted, x)


def test_fingerprint_sees_one_pixel():
    x, y = torch.zeros(4, 1, 8, 8), torch.arange(4)
    x2 = x.clone()
    x2[2, 0, 5, 5] = 1.0 / 8
    assert data_fingerprint("digits", x, y) != data_fingerprint("digits", x2, y)
    assert data_fingerprint("digits", x, y) != data_fingerprint("digits", x, y.flip(0))
    assert data_fingerprint("digits", x, y) == data_fingerprint("digits", x.clone(), y.clone())


def test_training_is_deterministic_and_leaves_global_state():
    split = load_split("digits")
    settings = quick_settings("digits", epochs=2)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    a, _ = train_classifier("digits", seed=3, settings=settings, split=split)
    b, _ = train_classifier("digits", seed=3, settings=settings, split=split)
    c, _ = train_classifier("digits", seed=4, settings=settings, split=split)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_split_rules():
    digits = load_split("digits")
    assert (len(digits.train_x), len(digits.heldout_x)) == (1437, 360)
    with pytest.raises(ValueError, match="data_path"):
        load_split("mnist")
    with pytest.raises(ValueError, match="kind"):
        load_split("cifar")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_split_every_fifth_image_held_out(tmp_path):
    pixels = np.arange(50, dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", pixels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(50) % 10)
    split = load_split("mnist", tmp_path)
    assert (len(split.train_x), len(split.heldout_x)) == (40, 10)
    held = ((split.heldout_x[:, 0, 0, 0] + 1) * 127.5).round().long()
    assert held.tolist() == list(range(0, 50, 5)) and split.heldout_y.tolist() == [0, 5] * 5
    assert split.fingerprint == load_split("mnist", tmp_path / "t10k-images-idx3-ubyte").fingerprint
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="labels"):
        load_split("mnist", tmp_path)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """(cache dir, model, metadata, seconds) of the full digits classifier trained into a fresh cache."""
    cache = tmp_path_factory.mktemp("cache")
    start = time.perf_counter()
    model, meta = load_or_train_classifier("digits", cache_dir=cache)
    return cache, model, meta, time.perf_counter() - start


def test_digits_classifier_accuracy(digits_cache):
    _, model, meta, seconds = digits_cache
    split = load_split("digits")
    acc = accuracy(model, split.heldout_x, split.heldout_y)
    print(f"digits held-out accuracy {acc:.4f}, trained in {seconds:.1f} s")
    assert acc >= REQUIRED_ACCURACY["digits"] == 0.97
    assert meta["heldout_accuracy"] == pytest.approx(acc)
    assert meta["fingerprint"] == split.fingerprint and meta["n_heldout"] == 360


def _forbid_training(*args, **kwargs):
    raise AssertionError("a valid cache entry must not be retrained")


def test_cache_round_trip(digits_cache, monkeypatch):
    cache, model, meta, _ = digits_cache
    monkeypatch.setattr(cache_module, "train_classifier", _forbid_training)
    loaded, meta2 = load_or_train_classifier("digits", cache_dir=cache)
    x = load_split("digits").heldout_x
    assert torch.equal(extract_features(loaded, x), extract_features(model, x))
    assert meta2 == meta
    weights, meta_file = cache_module.entry_paths("digits", meta["fingerprint"], cache)
    assert weights.is_file() and meta_file.is_file()
    assert not list(weights.parent.glob("*.tmp"))  # atomic writes leave no temporaries


def _counting_quick_trainer(calls):
    """A stand-in for train_classifier that trains for one epoch and counts its calls."""
    def train(kind, seed=0, split=None, **kwargs):
        calls.append(kind)
        return train_classifier(kind, seed=seed, split=split, settings=quick_settings(kind, 1))
    return train


@pytest.mark.filterwarnings("ignore:the digits classifier reached only")  # the one-epoch stand-in
@pytest.mark.parametrize("tamper", ["fingerprint", "version", "seed", "config", "garbage_json", "weights_bytes"])
def test_cache_tampering_triggers_retraining(digits_cache, tmp_path, monkeypatch, tamper):
    cache, _, meta, _ = digits_cache
    weights, meta_file = cache_module.entry_paths("digits", meta["fingerprint"], cache)
    local = tmp_path / "cache"
    w2, m2 = cache_module.entry_paths("digits", meta["fingerprint"], local)
    w2.parent.mkdir(parents=True)
    w2.write_bytes(weights.read_bytes())
    data = json.loads(meta_file.read_text())
    if tamper == "fingerprint":
        data["fingerprint"] = "0" * 64
    elif tamper == "version":
        data["version"] = -1
    elif tamper == "seed":
        data["seed"] = 123
    elif tamper == "config":
        data["config"]["feature_dim"] = 64
    m2.write_text("{not json" if tamper == "garbage_json" else json.dumps(data))
    if tamper == "weights_bytes":
        raw = bytearray(w2.read_bytes())
        raw[-1] ^= 0xFF
        w2.write_bytes(bytes(raw))
    calls = []
    monkeypatch.setattr(cache_module, "train_classifier", _counting_quick_trainer(calls))
    with pytest.warns(UserWarning, match="retraining the digits classifier"):
        _, meta_new = load_or_train_classifier("digits", cache_dir=local)
    assert calls == ["digits"]
    assert meta_new["fingerprint"] == meta["fingerprint"] and meta_new["version"] == cache_module.CACHE_VERSION
    # the rewritten entry is valid again
    monkeypatch.setattr(cache_module, "train_classifier", _forbid_training)
    load_or_train_classifier("digits", cache_dir=local)


def test_cache_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIFFUSE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "rediffuse"
    monkeypatch.setenv("REDIFFUSE_CACHE", str(tmp_path / "rc"))
    assert cache_root() == tmp_path / "rc"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("REDIFFUSE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "rediffuse"


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of [N, 1, H, W] images (background -1 outside), sigma in pixels."""
    if sigma == 0:
        return x
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    padded = F.pad(x, (r, r, r, r), value=-1.0)
    out = F.conv2d(padded, k.view(1, 1, 1, -1))
    return F.conv2d(out, k.view(1, 1, -1, 1))


def _noise(x: torch.Tensor, std: float) -> torch.Tensor:
    """x plus seeded Gaussian noise, clamped to [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _assert_frechet_grows(model, reference, images, degrade, levels):
    """Frechet distance between reference features and degraded images' features increases with the level."""
    ref = extract_features(model, reference)
    d = [frechet_distance(ref, extract_features(model, degrade(images, s))) for s in levels]
    assert all(b > a for a, b in zip(d, d[1:])), (levels, d)
    return d


def test_digits_frechet_grows_with_blur_and_noise(digits_cache):
    _, model, _, _ = digits_cache
    split = load_split("digits")
    blur = _assert_frechet_grows(model, split.train_x, split.heldout_x, _blur, [0.0, 0.5, 0.8, 1.2, 2.0])
    noise = _assert_frechet_grows(model, split.train_x, split.heldout_x, _noise, [0.0, 0.2, 0.35, 0.5, 0.8])
    print(f"digits Frechet vs blur {[round(v, 2) for v in blur]}, vs noise {[round(v, 2) for v in noise]}")


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not present")
def test_mnist_classifier_accuracy_and_frechet(tmp_path):
    start = time.perf_counter()
    model, meta = load_or_train_classifier("mnist", MNIST, cache_dir=tmp_path)
    seconds = time.perf_counter() - start
    split = load_split("mnist", MNIST)
    assert (len(split.train_x), len(split.heldout_x)) == (8000, 2000)
    acc = accuracy(model, split.heldout_x, split.heldout_y)
    print(f"MNIST held-out accuracy {acc:.4f}, trained in {seconds:.1f} s")
    assert acc >= REQUIRED_ACCURACY["mnist"] == 0.98
    assert meta["heldout_accuracy"] == pytest.approx(acc)
    _assert_frechet_grows(model, split.train_x, split.heldout_x, _blur, [0.0, 0.5, 1.0, 2.0])
    _assert_frechet_grows(model, split.train_x, split.heldout_x, _noise, [0.0, 0.1, 0.3, 0.6])


# ---------------------------------------------------------------- Inception


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """(path of a random-weights .safetensors file, its state dict)."""
    state = random_inception_state()
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file(state, str(path))
    return path, state


def test_inception_features_shape_determinism_and_weights(inception_file):
    path, state = inception_file
    net = load_inception(path)
    loaded = net.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    g = torch.Generator().manual_seed(1)
    grey = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1
    a = net.features(grey, batch_size=1)
    b = net.features(grey)
    assert a.shape == (2, 2048) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.std() > 0 and (a >= 0).all()  # pool of ReLU outputs
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(net.features(grey, batch_size=1), a)  # bitwise deterministic on repeat


def test_inception_preprocess():
    net = InceptionFeatures(InceptionV3(), quantize=False)
    grey = torch.linspace(-1, 1, 299 * 299).view(1, 1, 299, 299)
    out = net.preprocess(grey)
    assert out.shape == (1, 3, 299, 299)
    torch.testing.assert_close(out, grey.expand(-1, 3, -1, -1))  # 299 x 299 grey in [-1, 1]: unchanged
    small = torch.rand(2, 3, 8, 8) * 2.4 - 1.2  # out-of-range values are clamped
    pre = net.preprocess(small)
    assert pre.shape == (2, 3, 299, 299) and pre.min() >= -1 and pre.max() <= 1
    u = (small.clamp(-1, 1) + 1) / 2
    expected = 2 * F.interpolate(u, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(pre, expected)
    quant = InceptionFeatures(net.network, quantize=True).preprocess(grey)
    levels = (quant + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # 8-bit levels
    with pytest.raises(ValueError, match="1 or 3"):
        net.preprocess(torch.zeros(1, 2, 8, 8))


def test_inception_pth_and_conversion(inception_file, tmp_path):
    _, state = inception_file
    pth = tmp_path / "weights.pth"
    torch.save({**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, pth)
    net = load_inception(pth)
    assert all(torch.equal(net.network.state_dict()[k], v) for k, v in state.items())
    converted = convert_inception_weights(pth, tmp_path / "weights.safetensors")
    net2 = load_inception(converted)
    assert all(torch.equal(net2.network.state_dict()[k], v) for k, v in state.items())


def test_inception_weight_errors_name_the_mismatch(inception_file, tmp_path):
    path, state = inception_file
    bad = dict(state)
    bad["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    with pytest.raises(InceptionWeightsError, match=r"wrong shape 1: Mixed_6b\.branch7x7_2\.conv\.weight "
                                                    r"\(128, 128, 7, 1\) \(expected \(128, 128, 1, 7\)\)"):
        check_inception_weights(bad)
    missing = {k: v for k, v in state.items() if k != "Mixed_7c.branch_pool.bn.running_var"}
    file = tmp_path / "missing.safetensors"
    save_file(missing, str(file))
    with pytest.raises(InceptionWeightsError, match=r"missing 1: Mixed_7c\.branch_pool\.bn\.running_var") as err:
        load_inception(file)
    assert str(file) in str(err.value)
    extra = {**state, "AuxLogits.fc.weight": torch.zeros(1000, 768), "fc.weight": torch.zeros(1000, 2048)}
    with pytest.raises(InceptionWeightsError, match=r"torchvision.*unexpected 1: AuxLogits\.fc\.weight; "
                                                    r"wrong shape 1: fc\.weight \(1000, 2048\)"):
        check_inception_weights(extra)
    with pytest.raises(InceptionWeightsError, match="does not exist"):
        load_inception(tmp_path / "nowhere.safetensors")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(InceptionWeightsError, match="cannot read"):
        load_inception(junk)


def test_inception_without_weights_explains(monkeypatch, inception_file):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(InceptionWeightsError, match=f"{WEIGHTS_ENV}.*{WEIGHTS_FILE}.*never downloads") as err:
        load_inception()
    assert "\n" not in str(err.value)
    monkeypatch.setenv(WEIGHTS_ENV, str(inception_file[0]))
    assert isinstance(load_inception(), InceptionFeatures)
