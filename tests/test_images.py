"""Tests for the image data loaders."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rediffuse.data import (
    load_array,
    load_digits,
    load_image_folder,
    load_images,
    load_mnist_idx,
    random_hflip,
)
from rediffuse.data.images import read_idx

MNIST = Path("/work/shared/data/mnist")
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_shape_range_labels():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert y.dtype == torch.long and set(y.tolist()) == set(range(10))
    from sklearn.datasets import load_digits as sk

    torch.testing.assert_close(x[5, 0], torch.from_numpy(sk().images[5]).float() / 8 - 1)
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    assert len(xtr) + len(xte) == 1797 and torch.equal(torch.cat([ytr, yte]), y)
    with pytest.raises(ValueError, match="split"):
        load_digits("val")


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST files not present")
def test_mnist_test_split():
    x, y = load_mnist_idx(MNIST)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert torch.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert abs((x.mean().item() + 1) / 2 - 0.1325) < 0.002  # the known MNIST mean intensity
    raw_labels = np.frombuffer(gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    assert y[0].item() == raw_labels[0] == 7
    assert (x[0] > 0).sum() > 50  # a drawn digit, not a blank image
    x2, y2 = load_mnist_idx(MNIST / "t10k-images-idx3-ubyte.gz")  # direct file path finds the labels
    assert torch.equal(x2[:100], x[:100]) and torch.equal(y2, y)


def _write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> Path:
    data = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">i4").tobytes() + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_mnist_idx_uncompressed_train_and_validation(tmp_path):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    _write_idx(tmp_path / "train-images-idx3-ubyte", pixels)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 9]))
    x, y = load_mnist_idx(tmp_path)
    assert x.shape == (2, 1, 3, 4) and y.tolist() == [3, 9]
    torch.testing.assert_close(x[:, 0], torch.from_numpy(pixels).float() / 127.5 - 1)

    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x00\x00\x07\x03" + bytes(20))
    with pytest.raises(ValueError, match="bad.*not an IDX"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    truncated.write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes()[:-3])
    with pytest.raises(ValueError, match="short.*need 24 data bytes"):
        read_idx(truncated)
    with pytest.raises(ValueError, match="3 dimensions"):
        load_mnist_idx(tmp_path / "train-labels-idx1-ubyte")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 9, 1]))
    with pytest.raises(ValueError, match="3 labels for 2 images"):
        load_mnist_idx(tmp_path)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("cats", 3), ("dogs", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            arr = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # landscape, gets resized and cropped
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_image_folder_skip_counts_corrupt_file(image_folder):
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*broken\.png"):
        x, y, names = load_image_folder(image_folder, size=8, channels=3)
    assert names == ["cats", "dogs"]
    assert x.shape == (5, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1]
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    with pytest.warns(UserWarning):
        grey, _, _ = load_image_folder(image_folder, size=6, channels=1)
    assert grey.shape == (5, 1, 6, 6)


def test_image_folder_raise_names_file(image_folder):
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image_folder(image_folder, size=8, on_error="raise")


def test_image_folder_crop_is_centred(tmp_path):
    arr = np.zeros((4, 8), np.uint8)
    arr[:, 2:6] = 255  # the centre 4x4 square is white
    Image.fromarray(arr).save(tmp_path / "a.png")
    x, y, names = load_image_folder(tmp_path, size=4, channels=1)
    assert names == [tmp_path.name] and y.tolist() == [0]
    assert torch.equal(x, torch.ones(1, 1, 4, 4))


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_npy_round_trip(tmp_path, layout):
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    expected = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1
    arr = {"nhw": u8[..., 0], "nhwc": u8, "nchw": expected.numpy()}[layout]
    if layout == "nhw":
        expected = expected[:, :1]
    labels = np.arange(5)
    np.savez(tmp_path / "d.npz", images=arr, labels=labels)
    x, y = load_array(tmp_path / "d.npz")
    torch.testing.assert_close(x, expected)
    assert y.tolist() == labels.tolist()
    np.save(tmp_path / "d.npy", arr)
    x2, y2 = load_array(tmp_path / "d.npy")
    torch.testing.assert_close(x2, expected)
    assert y2 is None
    s = load_images(str(tmp_path / "d.npz"))
    assert torch.equal(s.images, x) and torch.equal(s.labels, y)


def test_array_errors(tmp_path):
    np.save(tmp_path / "big.npy", np.full((2, 1, 4, 4), 200.0, np.float32))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*200"):
        load_array(tmp_path / "big.npy")
    np.savez(tmp_path / "nokey.npz", pics=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="'images' or 'x'.*pics"):
        load_array(tmp_path / "nokey.npz")
    np.save(tmp_path / "i16.npy", np.zeros((2, 4, 4), np.int16))
    with pytest.raises(ValueError, match="uint8 or float"):
        load_array(tmp_path / "i16.npy")


def test_random_hflip_per_sample_and_reproducible():
    x = torch.arange(64 * 4, dtype=torch.float32).view(64, 1, 1, 4)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == x).all(dim=(1, 2, 3))
    assert torch.all(flipped ^ kept) and 10 < flipped.sum() < 54
    assert torch.equal(out, random_hflip(x, torch.Generator().manual_seed(0)))


def test_load_images_dispatch_resize_and_channels(image_folder):
    digits = load_images("digits", size=16, channels=3)
    assert digits.images.shape == (1797, 3, 16, 16) and digits.labels is not None
    assert digits.images.min() >= -1 and digits.images.max() <= 1
    with pytest.warns(UserWarning):
        folder = load_images(str(image_folder), size=8, channels=1)
    assert folder.images.shape == (5, 1, 8, 8) and folder.class_names == ["cats", "dogs"]
    with pytest.warns(UserWarning):
        assert load_images(f"folder:{image_folder}", size=8).images.shape == (5, 3, 8, 8)


def test_bad_spec_lists_accepted_forms():
    with pytest.raises(ValueError, match=r"unknown image spec 'cifar'.*digits.*mnist:PATH.*folder:PATH.*npz"):
        load_images("cifar")


def test_holdout_parts_split_by_index_mod_5():
    from rediffuse.data.images import load_images

    full = load_images("digits")
    train, held = load_images("digits@train"), load_images("digits@heldout")
    assert len(train.images) + len(held.images) == len(full.images) and len(held.images) == 360
    assert torch.equal(held.images[1], full.images[5]) and torch.equal(train.labels[:4], full.labels[1:5])
