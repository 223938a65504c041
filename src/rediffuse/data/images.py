"""Image data sets as float32 tensors [N, C, H, W] in [-1, 1]: digits, MNIST IDX, image folders, arrays."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rediffuse.data.folders import class_labels, files_under
from rediffuse.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPEC_FORMS = (
    "'digits' (scikit-learn 8x8 digits)",
    "'mnist:PATH' (IDX files, a folder or an images file)",
    "'folder:PATH' (images in class sub-folders)",
    "a path ending in .npz or .npy",
    "a directory (same as folder:PATH)",
    "any of these + '@train' or '@heldout' (index % 5 != 0 or == 0: the project's hold-out rule)",
)
HOLDOUT_PARTS = ("train", "heldout")


def holdout_part(images: Tensor, labels: Tensor | None, part: str) -> tuple[Tensor, Tensor | None]:
    """The project-wide split: 'heldout' is every image whose index % 5 == 0, 'train' the rest."""
    if part not in HOLDOUT_PARTS:
        raise ValueError(f"unknown data part {part!r}; use '@train' or '@heldout'")
    keep = (torch.arange(len(images)) % 5 == 0) == (part == "heldout")
    return images[keep], None if labels is None else labels[keep]

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ImageSet(NamedTuple):
    """Images [N, C, H, W] in [-1, 1], optional long labels [N] and class names."""

    images: Tensor
    labels: Tensor | None = None
    class_names: list[str] | None = None


def _from_uint8(arr: np.ndarray) -> Tensor:
    """uint8 NCHW array -> float32 tensor in [-1, 1]."""
    return torch.from_numpy(np.require(arr, np.uint8, ("C", "W"))).float().div_(127.5).sub_(1.0)


def load_digits(split: str | None = None) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits as ([N, 1, 8, 8] in [-1, 1], labels [N]).

    ``split``: None for all, ``'train'`` for the first 1,500, ``'test'`` for the remaining 297.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    images = torch.from_numpy(data.images.astype(np.float32)).div_(8.0).sub_(1.0).unsqueeze(1)
    labels = torch.from_numpy(data.target).long()
    if split is None:
        return images, labels
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be None, 'train' or 'test', got {split!r}")
    sl = slice(0, 1500) if split == "train" else slice(1500, None)
    return images[sl].contiguous(), labels[sl].contiguous()


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into a numpy array, validating header and size."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex(' ')})")
    if ndim is not None and raw[3] != ndim:
        raise ValueError(f"{path}: expected an IDX file of {ndim} dimensions, header says {raw[3]}")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", raw[3], 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header dims {dims} need {expected} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find_idx(folder: Path, kind: str, split: str | None) -> Path | None:
    """The images/labels IDX file for a split in an MNIST folder (train preferred when split is None)."""
    prefixes = {"train": ("train",), "test": ("t10k", "test"), None: ("train", "t10k", "test")}[split]
    pattern = {"images": "images*idx3-ubyte*", "labels": "labels*idx1-ubyte*"}[kind]
    for prefix in prefixes:
        hits = sorted(folder.glob(f"{prefix}-{pattern}"))
        if hits:
            return hits[0]
    return None


def load_mnist_idx(path: str | Path, split: str | None = None) -> tuple[Tensor, Tensor | None]:
    """MNIST-style IDX data as ([N, 1, H, W] in [-1, 1], labels [N] or None when no labels file).

    ``path`` is a folder with ``train-*``/``t10k-*`` ``images-idx3-ubyte``/``labels-idx1-ubyte`` files
    (gzipped or not; ``split`` picks one, else train if present) or a direct images-file path.
    """
    path = Path(path)
    if path.is_dir():
        images_file = _find_idx(path, "images", split)
        if images_file is None:
            raise FileNotFoundError(f"no *-images-idx3-ubyte[.gz] file for split {split!r} in {path}")
        labels_file = _find_idx(path, "labels", split)
        if labels_file is not None and labels_file.name.split("-")[0] != images_file.name.split("-")[0]:
            labels_file = None
    elif path.is_file():
        images_file = path
        guess = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
        labels_file = guess if guess != path and guess.is_file() else None
    else:
        raise FileNotFoundError(f"MNIST path {path} does not exist")
    pixels = read_idx(images_file, ndim=3)
    if pixels.dtype != np.uint8:
        raise ValueError(f"{images_file}: expected uint8 pixels, got {pixels.dtype}")
    images = _from_uint8(pixels[:, None])
    if labels_file is None:
        return images, None
    labels = read_idx(labels_file, ndim=1)
    if len(labels) != len(images):
        raise ValueError(f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file}")
    return images, torch.from_numpy(labels.astype(np.int64))


GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


MAX_SIDE = 1024  # the default longest side an image may have when it is loaded at its stored size


class ImageTooLargeError(ConfigError):
    """An image too large to load at its stored size (a usage error: give a size to resize it on load)."""


def _open_image(file: Path, size: int | None, channels: int | None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Read one image file as a uint8 [C, H, W] array (C = channels, or 1 for a grey file and 3 otherwise when
    None), resized (shorter side) and centre-cropped to ``size``; ImageTooLargeError, before decoding, for an
    image with a side over ``max_side`` when ``size`` is None."""
    with Image.open(file) as img:
        if size is None and max(img.size) > max_side:
            raise ImageTooLargeError(f"image {file} is {img.size[0]}x{img.size[1]}, over the {max_side}-pixel "
                                     "limit for loading at the stored size; give --image-size N to resize on "
                                     "load (or raise --max-image-side)")
        grey = img.mode in GREY_MODES
        img = img.convert("L" if channels == 1 or (channels is None and grey) else "RGB")
        if size is not None:
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), getattr(Image, "Resampling", Image).BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(
    path: str | Path, size: int | None, channels: int | None = None, on_error: str = "skip",
    max_side: int = MAX_SIDE,
) -> tuple[Tensor, Tensor, list[str]]:
    """Images of a folder, at any depth, as ([N, C, size, size] in [-1, 1], labels [N], class names).

    Classes are the sorted first-level sub-folder names when every image is in one; otherwise the folder is
    one class. ``channels`` 1 or 3 converts; None keeps grey folders grey (C = 1 when every file is grey, else
    3). Each image is resized on its shorter side and centre-cropped to ``size`` (None keeps sizes, which must
    then agree); without ``size``, a side over ``max_side`` is refused before decoding. Unreadable files are
    skipped with one warning (``on_error='skip'``) or raise ('raise').
    """
    path = Path(path)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist")
    files = files_under(path, IMAGE_SUFFIXES)
    labels_of, class_names = class_labels(path, files) or ([0] * len(files), [path.name])
    arrays, labels, bad = [], [], []
    for file, label in zip(files, labels_of):
        try:
            arrays.append(_open_image(file, size, channels, max_side))
        except ImageTooLargeError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's corrupt-file errors
            if on_error == "raise":
                raise ValueError(f"cannot read image {file}: {e}") from e
            bad.append(file)
            continue
        labels.append(label)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image file(s) in {path}; first: {bad[0]}", stacklevel=2)
    if not arrays:
        raise ValueError(f"no readable images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
    if len({a.shape[0] for a in arrays}) > 1:  # grey and colour files mixed: all colour
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {path} differ in size {sorted(shapes)[:3]}...; pass size=")
    return _from_uint8(np.stack(arrays)), torch.tensor(labels, dtype=torch.long), class_names


def _to_nchw(arr: np.ndarray, source: str) -> np.ndarray:
    """[N, H, W], [N, H, W, C] or [N, C, H, W] -> [N, C, H, W] (C in 1, 3, 4)."""
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3, 4):
            return arr
        if arr.shape[3] in (1, 3, 4):
            return arr.transpose(0, 3, 1, 2)
    raise ValueError(f"{source}: images must be [N,H,W], [N,H,W,C] or [N,C,H,W] with C in 1/3/4, got {arr.shape}")


def load_array(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """Images from ``.npy`` or ``.npz`` (keys ``images``/``x``, optional ``labels``/``y``) as NCHW in [-1, 1].

    uint8 arrays are scaled from [0, 255]; float arrays must already lie in [-1, 1].
    """
    path = Path(path)
    labels = None
    if path.suffix == ".npz":
        with np.load(path) as npz:
            key = next((k for k in ("images", "x") if k in npz), None)
            if key is None:
                raise ValueError(f"{path}: no 'images' or 'x' array (keys: {sorted(npz.files)})")
            arr = npz[key]
            label_key = next((k for k in ("labels", "y") if k in npz), None)
            labels = npz[label_key] if label_key else None
    elif path.suffix == ".npy":
        arr = np.load(path)
    else:
        raise ValueError(f"{path}: expected a .npz or .npy file")
    arr = _to_nchw(arr, str(path))
    if arr.dtype == np.uint8:
        images = _from_uint8(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        images = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        lo, hi = (images.min().item(), images.max().item()) if images.numel() else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.001 or hi > 1.001:
            raise ValueError(f"{path}: float images must lie in [-1, 1], found [{lo:.4g}, {hi:.4g}]; "
                             "rescale them (e.g. x * 2 - 1 for [0, 1]) or store uint8 in [0, 255]")
        if lo >= 0.0 and hi > 0.0:
            warnings.warn(f"{path}: float images lie in [0, {hi:.3g}], rediffuse expects [-1, 1]", stacklevel=2)
        images = images.clamp_(-1.0, 1.0)
    else:
        raise ValueError(f"{path}: images must be uint8 or float, got {arr.dtype}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
        labels = torch.from_numpy(labels.astype(np.int64))
    return images, labels


def random_hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Flip each image of x [B, C, H, W] left-right with probability ``p``."""
    device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=device) < p).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def _resize(images: Tensor, size: int) -> Tensor:
    """Resize [N, C, H, W] on the shorter side and centre-crop to size x size."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = F.interpolate(images, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[..., top:top + size, left:left + size].clamp_(-1.0, 1.0).contiguous()


def _set_channels(images: Tensor, channels: int) -> Tensor:
    """Convert [N, C, H, W] between grey (1) and RGB (3) channels."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c in (3, 4) and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images[:, :3] * weights).sum(1, keepdim=True)
    if c == 4 and channels == 3:
        return images[:, :3].contiguous()
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def load_images(
    spec: str, size: int | None = None, channels: int | None = None, on_error: str = "skip",
    max_side: int = MAX_SIDE,
) -> ImageSet:
    """Load images by spec; see ``SPEC_FORMS``. ``size``/``channels`` resize and convert when given."""
    base, at, part = spec.rpartition("@")
    if at and part in HOLDOUT_PARTS:
        data = load_images(base, size, channels, on_error, max_side)
        return ImageSet(*holdout_part(data.images, data.labels, part), data.class_names)
    kind, _, rest = spec.partition(":")
    class_names = None
    if spec == "digits" or (kind == "digits" and rest in ("train", "test")):
        images, labels = load_digits(rest or None)
    elif kind == "mnist" and rest:
        images, labels = load_mnist_idx(rest)
    elif kind == "folder" and rest:
        images, labels, class_names = load_image_folder(rest, size, channels, on_error, max_side)
    elif spec.endswith((".npz", ".npy")):
        images, labels = load_array(spec)
    elif Path(spec).is_dir():
        images, labels, class_names = load_image_folder(spec, size, channels, on_error, max_side)
    else:
        raise ValueError(f"unknown image spec {spec!r}; accepted: " + "; ".join(SPEC_FORMS))
    if size is not None:
        images = _resize(images, size)
    if channels is not None:
        images = _set_channels(images, channels)
    return ImageSet(images, labels, class_names)
