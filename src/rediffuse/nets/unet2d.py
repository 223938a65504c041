"""A lean 2-D UNet for image diffusion: residual blocks with scale-shift noise conditioning and attention."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rediffuse.nets.blocks import Block, ResBlock, SelfAttention, _groups, _zero, build_levels, run_levels
from rediffuse.nets.embedding import ConditionEmbedding


_TAP_MATRICES: dict[tuple[int, int, torch.dtype, torch.device], Tensor] = {}


def _tap_matrix(h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[9, (hw)^2] 0/1 map from 3x3 taps to the (output pixel, input pixel) pairs they join on an h x w map."""
    key = (h, w, dtype, device)
    if key not in _TAP_MATRICES:
        m = torch.zeros(9, h * w, h * w, dtype=dtype)
        for i in range(h):
            for j in range(w):
                for u in range(max(0, i - 1), min(h, i + 2)):
                    for v in range(max(0, j - 1), min(w, j + 2)):
                        m[(u - i + 1) * 3 + v - j + 1, i * w + j, u * w + v] = 1
        _TAP_MATRICES[key] = m.view(9, -1).to(device)
    return _TAP_MATRICES[key]


def tiny_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv2d(x, weight, bias, padding=1)`` for a tiny map (e.g. 2x2) as one dense matrix product.

    The same function to float rounding: every output pixel is the sum over the input pixels its 3x3
    window covers, so only the (hw)^2 live taps are multiplied (16 of the 36 per channel pair at 2x2),
    in a single GEMM instead of a padded convolution. The dense weight is built from ``weight`` by an
    exact 0/1 matrix product, so gradients flow back to the 3x3 kernel.
    """
    b, c, h, w = x.shape
    o, n = weight.shape[0], h * w
    dense = (weight.reshape(o * c, 9) @ _tap_matrix(h, w, weight.dtype, weight.device)).view(o, c, n, n)
    dense = dense.transpose(1, 2).reshape(o * n, c * n)  # [(out ch, out pixel), (in ch, in pixel)]
    full_bias = None if bias is None else bias[:, None].expand(o, n).reshape(o * n)
    return F.linear(x.reshape(b, c * n), dense, full_bias).view(b, o, h, w)


def narrow_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv2d(x, weight, bias, padding=1)`` for few output channels: a 1x1 convolution to one map per
    (output channel, tap), then `F.fold` (col2im) adds each tap's map at its offset.

    The same multiply-adds and function, to float rounding; on CPU the direct convolution is slow when
    it has only one or a few output channels (the UNet's last layer).
    """
    _, c, h, w = x.shape
    o = weight.shape[0]
    taps = weight.flip(2, 3).reshape(o, c, 9).transpose(1, 2).reshape(o * 9, c, 1, 1)  # fold puts tap k at -k
    y = F.fold(F.conv2d(x, taps).flatten(2), (h, w), 3, padding=1)
    return y if bias is None else y + bias.view(1, o, 1, 1)


class Conv3x3(nn.Conv2d):
    """A 3x3, padding-1 convolution; on CPU, tiny maps take the `tiny_conv3x3` form and few output
    channels the `narrow_conv3x3` form (same weights, same function)."""

    TINY_MAX_PIXELS = 4  # 2x2: 16 instead of 36 multiply-adds per channel pair; measured faster on CPU
    NARROW_MAX_OUT = 4  # measured faster for 1 output channel from 32 at 8x8 and 28x28

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve x [B, in_ch, H, W] to [B, out_ch, H, W]."""
        if x.device.type == "cpu":
            if x.shape[-2] * x.shape[-1] <= self.TINY_MAX_PIXELS:
                return tiny_conv3x3(x, self.weight, self.bias)
            if self.out_channels <= self.NARROW_MAX_OUT:
                return narrow_conv3x3(x, self.weight, self.bias)
        return super().forward(x)


class Downsample(nn.Module):
    """Halve the spatial size with a stride-2 3x3 convolution."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """Downsample x [B, C, H, W] to [B, C, H/2, W/2]."""
        return self.conv(x)


def _upsample_taps(weight: Tensor, dim: int) -> Tensor:
    """The 4-tap transposed-convolution kernel that a 3-tap axis of ``weight`` becomes under nearest-2x upsampling.

    Output row 2i reads upsampled rows 2i-1, 2i, 2i+1 = input rows i-1, i, i; output row 2i+1 reads
    input rows i, i, i+1. A stride-2 transposed convolution (padding 1) gives output row 2i the taps
    k = 3, 1 of rows i-1, i and row 2i+1 the taps k = 2, 0 of rows i, i+1, so k = (w2, w1+w2, w0+w1, w0).
    """
    t0, t1, t2 = weight.unbind(dim)
    return torch.stack([t2, t1 + t2, t0 + t1, t0], dim)


def nearest2x_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv3x3(nearest_upsample_2x(x))`` (padding 1) computed at the resolution of x.

    The same function as the direct form, to float rounding, as one stride-2 transposed convolution
    with a 4x4 kernel: each output pixel needs 4 taps instead of 9 (16 / 36 of the multiply-adds),
    and the upsampled input is never built.
    """
    kernel = _upsample_taps(_upsample_taps(weight, 2), 3).transpose(0, 1)  # [C_in, C_out, 4, 4]
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


class Upsample(nn.Module):
    """Double the spatial size: nearest-neighbour upsampling then a 3x3 convolution.

    On CPU, inputs of at least ``PHASE_MIN_SIZE`` pixels a side take the equivalent low-resolution
    form `nearest2x_conv3x3` (the same weights and function, 16/36 of the multiply-adds).
    """

    PHASE_MIN_SIZE = 1  # the transposed form wins at every size measured (2x2 to 14x14 inputs, 64 channels)

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """Upsample x [B, C, H, W] to [B, C, 2H, 2W]."""
        if x.device.type == "cpu" and min(x.shape[-2:]) >= self.PHASE_MIN_SIZE:
            return nearest2x_conv3x3(x, self.conv.weight, self.conv.bias)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet2D(nn.Module):
    """Noise-conditioned UNet ``F(x, c_noise, cond)`` for images [B, C, H, W], optionally class-conditional.

    Level ``i`` works at ``image_size / 2**i`` with ``channels * channel_mults[i]`` channels;
    ``attn_resolutions`` lists the spatial sizes (heights, relative to ``image_size``) that get
    self-attention; ``image_width`` (default: ``image_size``) is the width of H x W images.
    Class labels ``num_classes`` (or -1, or ``cond=None``) select the learned null class used by
    classifier-free guidance. Any input whose sides are multiples of ``downsample_factor`` is accepted.

    ``patch_size`` p > 1 folds each p x p patch into channels before the first layer and unfolds the
    output after the last (pixel unshuffle/shuffle), so every level runs at 1/p the resolution: the
    cheap first-layer downsampling of Hoogeboom et al. 2023, "simple diffusion" (arXiv:2301.11093).
    """

    registry_name = "unet"  # its name in NETS and in saved configs

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        image_size: int = 32,
        dropout: float = 0.0,
        num_classes: int | None = None,
        attn_head_channels: int = 32,
        mid_attention: bool = True,
        emb_dim: int | None = None,
        patch_size: int = 1,
        image_width: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        mults = tuple(int(m) for m in channel_mults)
        if not mults or min(mults) < 1 or channels < 1 or num_res_blocks < 1 or patch_size < 1:
            raise ValueError("channels, num_res_blocks, patch_size and every channel_mult must be >= 1")
        factor = patch_size * 2 ** (len(mults) - 1)
        for name, side in (("image_size", image_size), ("image_width", image_width or image_size)):
            if side % factor:
                raise ValueError(
                    f"{name} {side} cannot be cut into {patch_size}x{patch_size} patches and halved "
                    f"{len(mults) - 1} times evenly; use a multiple of {factor}, a smaller patch_size or fewer "
                    "channel_mults"
                )
        resolutions = [image_size // patch_size // 2**i for i in range(len(mults))]
        bad = sorted(set(attn_resolutions) - set(resolutions))
        if bad:
            raise ValueError(f"attn_resolutions {bad} match no level; the levels are at {resolutions}")
        self._config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            channel_mults=list(mults),
            num_res_blocks=num_res_blocks,
            attn_resolutions=sorted(int(r) for r in attn_resolutions),
            image_size=image_size,
            dropout=float(dropout),
            num_classes=num_classes,
            attn_head_channels=attn_head_channels,
            mid_attention=mid_attention,
            emb_dim=emb_dim,
            patch_size=patch_size,
            **({"image_width": image_width} if image_width not in (None, image_size) else {}),
        )
        self.num_classes = num_classes
        self.downsample_factor, self.patch_size = factor, patch_size
        emb_dim = emb_dim or 4 * channels
        self.embed = ConditionEmbedding(emb_dim, freq_dim=channels, num_classes=num_classes)

        def block(cin: int, cout: int, attn: bool) -> Block:
            return Block(ResBlock(cin, cout, emb_dim, dropout, Conv3x3),
                         SelfAttention(cout, attn_head_channels) if attn else None)

        self.conv_in = nn.Conv2d(in_channels * patch_size**2, channels, 3, padding=1)
        self.down, self.mid, self.up, ch = build_levels(
            channels, mults, num_res_blocks, [r in attn_resolutions for r in resolutions], block,
            lambda c, _: Downsample(c), lambda c, _: Upsample(c), mid_attention)
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(Conv3x3(ch, out_channels * patch_size**2))

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def data_config(cls, shape: Sequence[int], num_classes: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The config of a 2-D UNet for examples of `shape` with kwargs (ValueError unless images [C, H, W])."""
        if len(shape) != 3:
            raise ValueError(f"net 'unet' needs images [N, C, H, W], got examples of shape {list(shape)}; use "
                             "--net mlp for points or --net unet1d for waveforms")
        return {**kwargs, "in_channels": shape[0], "image_size": shape[1], "num_classes": num_classes,
                **({"image_width": shape[2]} if shape[2] != shape[1] else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNet2D":
        """Build a model from ``config()`` output."""
        return cls(**config)

    def forward(self, x: Tensor, c_noise: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Map x [B, in_channels, H, W], noise input [B] (or scalar) and labels [B] to [B, out_channels, H, W]."""
        b, _, height, width = x.shape
        f = self.downsample_factor
        if height % f or width % f:
            raise ValueError(
                f"UNet2D cuts the image into {self.patch_size}x{self.patch_size} patches and halves it "
                f"{len(self._config['channel_mults']) - 1} times, so height and width must be multiples of {f}; "
                f"got {height}x{width}. Pad or resize the images to "
                f"{-(-height // f) * f}x{-(-width // f) * f}, or use fewer channel_mults."
            )
        emb = self.embed(c_noise, cond, b, x.device)
        p = self.patch_size
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        h = run_levels(self.down, self.mid, self.up, h, emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out
