"""Inception-v3 as in the TensorFlow FID graph (pytorch-fid's variant): 2048-d pool3 features for FID.

The network is Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision", with the
quirks of the 2015-12-05 TensorFlow graph that FID (Heusel et al. 2017) uses, as pytorch-fid ports it:
batch-norm eps 1e-3, average pools inside Mixed_5b..7b that exclude the zero padding from the mean, and a
max pool (not an average pool) in the pool branch of Mixed_7c. Parameter names follow torchvision /
pytorch-fid, so their FID weights file loads unchanged.

Preprocessing (InceptionFeatures.preprocess), as pytorch-fid applies it to 8-bit image files:
  1. images in [-1, 1] are clamped, and with quantize=True rounded to 8 bits, k = round((x + 1) * 127.5);
  2. u = k / 255 in [0, 1] (or u = (x + 1) / 2 without quantising);
  3. grey images (1 channel) are repeated to 3 channels (as PIL's convert('RGB') does);
  4. u is resized to 299 x 299 with F.interpolate(mode='bilinear', align_corners=False, no antialiasing),
     skipped when already 299 x 299;
  5. the network sees 2 u - 1 in [-1, 1].
The TensorFlow graph resizes with TF1's bilinear kernel, which places pixel centres differently, so for
inputs that need resizing the numbers match pytorch-fid's exactly and TensorFlow's FID closely, not bit
for bit; 299 x 299 inputs agree with both up to float round-off.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_ENV = "REDIFFUSE_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
FID_CLASSES = 1008  # the TF graph's classifier (fc) rows; rediffuse ignores fc but checks its shape
INPUT_SIZE = 299
FEATURE_DIM = 2048


class InceptionWeightsError(ValueError):
    """An Inception weights file that is missing, unreadable, or does not fit the FID Inception-v3."""


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        """relu(bn(conv(x)))."""
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool whose border means exclude the padding (TensorFlow's 'SAME' average)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along channels."""
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3, max pool -> 480 + c_in channels."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along channels."""
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


def _factorised_7x7(c_in: int, c_mid: int, c_out: int) -> tuple[ConvBN, ConvBN]:
    """A 1x7 then a 7x1 convolution (padding keeps the size)."""
    return ConvBN(c_in, c_mid, (1, 7), padding=(0, 3)), ConvBN(c_mid, c_out, (7, 1), padding=(3, 0))


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 branches of width c7 -> 768 channels."""

    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, c7, 1)
        self.branch7x7_2, self.branch7x7_3 = _factorised_7x7(c7, c7, 192)
        self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along channels."""
        dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool(x)),
        ], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, 7x7-then-strided-3x3, max pool -> 512 + c_in channels."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2, self.branch7x7x3_3 = _factorised_7x7(192, 192, 192)
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along channels."""
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches -> 2048 channels; `pool` is 'avg' (Mixed_7b) or 'max' (Mixed_7c)."""

    def __init__(self, c_in: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate 1x1, split 3x3, split double 3x3 and pooled branches along channels."""
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], dim=1)


class InceptionV3(nn.Module):
    """FID Inception-v3 trunk: [N, 3, 299, 299] in [-1, 1] -> pool3 features [N, 2048] (no classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")

    def forward(self, x: Tensor) -> Tensor:
        """Stem (with two 3x3 stride-2 max pools), the mixed blocks, global average pool."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


class InceptionFeatures(nn.Module):
    """FID preprocessing (see the module docstring) + the Inception-v3 trunk: images in [-1, 1] -> [N, 2048]."""

    def __init__(self, network: InceptionV3, quantize: bool = True) -> None:
        super().__init__()
        self.network = network
        self.quantize = quantize

    def preprocess(self, x: Tensor) -> Tensor:
        """Images [N, 1 or 3, H, W] in [-1, 1] -> network input [N, 3, 299, 299] in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, 1 or 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        x = x.float().clamp(-1.0, 1.0)
        u = ((x + 1) * 127.5).round() / 255 if self.quantize else (x + 1) / 2
        u = u.expand(-1, 3, -1, -1)
        if tuple(u.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            u = F.interpolate(u, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * u - 1

    def forward(self, x: Tensor) -> Tensor:
        """pool3 features [N, 2048] of images [N, 1 or 3, H, W] in [-1, 1]."""
        return self.network(self.preprocess(x))

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 50) -> Tensor:
        """pool3 features [N, 2048] (float32, CPU), computed in eval mode in batches on the model's device."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            outs = [self(x[i:i + batch_size].to(device)).cpu() for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0, FEATURE_DIM)


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.pt/.bin state dict read with torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise InceptionWeightsError(f"Inception weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(9)
    try:
        if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, zip and unpickler errors have no common base class
        raise InceptionWeightsError(f"cannot read Inception weights {path}: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{path} does not hold a flat state dict of tensors (name -> tensor)")
    return state


def _listing(names: list[str], limit: int = 5) -> str:
    """First `limit` names, then how many more."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_inception_weights(state: dict[str, Tensor], source: str = "state dict") -> dict[str, Tensor]:
    """The float32 tensors of `state` that the FID InceptionV3 needs; raises naming every mismatch.

    Every parameter and batch-norm buffer must be present with its exact shape; `num_batches_tracked`
    counters are optional; `fc.weight` / `fc.bias` (the unused classifier) must be [1008, 2048] / [1008]
    when present; any other key is an error.
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in InceptionV3().state_dict().items()}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    classifier = {"fc.weight": (FID_CLASSES, FEATURE_DIM), "fc.bias": (FID_CLASSES,)}
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected and k not in classifier)
    shapes = {**expected, **classifier}
    wrong = sorted(f"{k} {tuple(v.shape)} (expected {shapes[k]})"
                   for k, v in state.items() if k in shapes and tuple(v.shape) != shapes[k])
    not_float = sorted(k for k, v in state.items()
                       if k in expected and k not in optional and not v.is_floating_point())
    problems = [f"{label} {len(items)}: {_listing(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong),
                 ("not floating point", not_float)) if items]
    if problems:
        hint = ""
        if "fc.weight" in state and state["fc.weight"].shape[0] == 1000 or any("AuxLogits" in k for k in state):
            hint = " (these look like torchvision's ImageNet Inception-v3 weights, not the FID ones)"
        raise InceptionWeightsError(f"{source} does not fit the FID Inception-v3{hint}: " + "; ".join(problems))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in expected}


def resolve_weights_path(weights_path: str | Path | None = None) -> Path:
    """weights_path, else $REDIFFUSE_INCEPTION_WEIGHTS; raises a one-line how-to when neither is set."""
    if weights_path is None:
        weights_path = os.environ.get(WEIGHTS_ENV) or None
    if weights_path is None:
        raise InceptionWeightsError(
            f"no Inception-v3 FID weights: pass weights_path= or set {WEIGHTS_ENV} to {WEIGHTS_FILE} "
            f"(pytorch-fid's release, {WEIGHTS_URL}) or a .safetensors copy of it; rediffuse never downloads it")
    return Path(weights_path).expanduser()


def load_inception(
    weights_path: str | Path | None = None, device: str | torch.device = "cpu", quantize: bool = True
) -> InceptionFeatures:
    """InceptionFeatures in eval mode on `device` with validated weights from a file (never downloaded)."""
    path = resolve_weights_path(weights_path)
    state = check_inception_weights(read_weights(path), source=str(path))
    with torch.device("meta"):  # no random init: every tensor comes from the file
        network = InceptionV3()
    counters = {k: torch.zeros((), dtype=torch.long) for k, _ in network.named_buffers() if k not in state}
    network.load_state_dict({**state, **counters}, strict=True, assign=True)
    for p in network.parameters():
        p.requires_grad_(False)
    return InceptionFeatures(network, quantize=quantize).to(device).eval()


def convert_inception_weights(src: str | Path, dst: str | Path) -> Path:
    """Validate a .pth FID weights file and save the needed tensors as .safetensors at dst (atomically)."""
    from safetensors.torch import save

    from rediffuse.io import atomic_write

    state = check_inception_weights(read_weights(src), source=str(src))
    atomic_write(dst, save({k: v.contiguous() for k, v in state.items()}))
    return Path(dst)
