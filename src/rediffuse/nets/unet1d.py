"""A 1-D UNet for waveform diffusion that down-samples early: patches first, then strided levels."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from rediffuse.nets.blocks import Block, ResBlock, SelfAttention, _groups, _zero, build_levels, run_levels
from rediffuse.nets.embedding import ConditionEmbedding


def fold_patches(x: Tensor, p: int) -> Tensor:
    """[B, C, L] -> [B, C * p, L / p]: channel c * p + k of position j holds sample j * p + k of channel c."""
    b, c, length = x.shape
    return x.view(b, c, length // p, p).transpose(2, 3).reshape(b, c * p, length // p)


def unfold_patches(h: Tensor, p: int) -> Tensor:
    """The inverse of `fold_patches`: [B, C * p, N] -> [B, C, N * p]."""
    b, cp, n = h.shape
    return h.view(b, cp // p, p, n).transpose(2, 3).reshape(b, cp // p, n * p)


class Downsample1D(nn.Module):
    """Shorten by an integer factor f with a strided convolution (kernel f + 2 (f // 2), padding f // 2)."""

    def __init__(self, ch: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, factor + 2 * (factor // 2), stride=factor, padding=factor // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, L] -> [B, C, L / f]."""
        return self.conv(x)


class Upsample1D(nn.Module):
    """Lengthen by an integer factor: nearest-neighbour repetition, then a size-preserving convolution."""

    def __init__(self, ch: int, factor: int, kernel_size: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv1d(ch, ch, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, L] -> [B, C, L * f]."""
        return self.conv(x.repeat_interleave(self.factor, dim=2))


class UNet1D(nn.Module):
    """Noise-conditioned UNet ``F(x, c_noise, cond)`` for waveforms [B, C, L], optionally class-conditional.

    The first layer folds each ``patch_size`` consecutive samples into channels and the last unfolds them
    (the cheap early down-sampling of Hoogeboom et al. 2023, "simple diffusion", arXiv:2301.11093, as in the
    patched 1-D UNets of audio-diffusion-pytorch); level i then works at length / patch_size / prod(factors[:i])
    positions with ``channels * channel_mults[i]`` channels, level i + 1 reached by a stride-factors[i]
    convolution. ``attn_lengths`` lists the level lengths (after patching) whose blocks attend. Labels
    ``num_classes`` (or -1, or ``cond=None``) select the learned null class for classifier-free guidance.
    """

    registry_name = "unet1d"  # its name in NETS and in saved configs

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        length: int = 8192,
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        factors: Sequence[int] = (4, 4),
        num_res_blocks: int = 2,
        patch_size: int = 16,
        kernel_size: int = 5,
        attn_lengths: Sequence[int] = (),
        dropout: float = 0.0,
        num_classes: int | None = None,
        attn_head_channels: int = 32,
        mid_attention: bool = True,
        emb_dim: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        mults, factors = tuple(int(m) for m in channel_mults), tuple(int(f) for f in factors)
        if not mults or min(mults) < 1 or channels < 1 or num_res_blocks < 1 or patch_size < 1:
            raise ValueError("channels, num_res_blocks, patch_size and every channel_mult must be >= 1")
        if len(factors) != len(mults) - 1 or (factors and min(factors) < 2):
            raise ValueError(f"give one down-sampling factor >= 2 between each pair of levels: {len(mults) - 1} "
                             f"factors for {len(mults)} channel_mults, got {list(factors)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (size-preserving), got {kernel_size}")
        self.downsample_factor = patch_size * math.prod(factors)
        if length % self.downsample_factor:
            raise ValueError(f"length {length} cannot be cut into patches of {patch_size} and shortened by "
                             f"{list(factors)} evenly; use a multiple of {self.downsample_factor}")
        lengths = [length // patch_size // math.prod(factors[:i]) for i in range(len(mults))]
        bad = sorted(set(attn_lengths) - set(lengths))
        if bad:
            raise ValueError(f"attn_lengths {bad} match no level; the levels are at {lengths}")
        self._config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, length=length, channels=channels,
            channel_mults=list(mults), factors=list(factors), num_res_blocks=num_res_blocks, patch_size=patch_size,
            kernel_size=kernel_size, attn_lengths=sorted(int(n) for n in attn_lengths), dropout=float(dropout),
            num_classes=num_classes, attn_head_channels=attn_head_channels, mid_attention=mid_attention,
            emb_dim=emb_dim)
        self.num_classes, self.patch_size = num_classes, patch_size
        emb_dim = emb_dim or 4 * channels
        self.embed = ConditionEmbedding(emb_dim, freq_dim=channels, num_classes=num_classes)

        def conv(cin: int, cout: int) -> nn.Module:
            return nn.Conv1d(cin, cout, kernel_size, padding=kernel_size // 2)

        def block(cin: int, cout: int, attn: bool) -> Block:
            return Block(ResBlock(cin, cout, emb_dim, dropout, conv, lambda i, o: nn.Conv1d(i, o, 1)),
                         SelfAttention(cout, attn_head_channels) if attn else None)

        self.conv_in = conv(in_channels * patch_size, channels)
        self.down, self.mid, self.up, ch = build_levels(
            channels, mults, num_res_blocks, [n in attn_lengths for n in lengths], block,
            lambda c, i: Downsample1D(c, factors[i]), lambda c, i: Upsample1D(c, factors[i - 1], kernel_size),
            mid_attention)
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(conv(ch, out_channels * patch_size))

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return dict(self._config)

    @classmethod
    def data_config(cls, shape: Sequence[int], num_classes: int | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The config of a 1-D UNet for examples of `shape` with kwargs (ValueError unless waveforms [C, L])."""
        if len(shape) != 2:
            raise ValueError(f"net 'unet1d' needs waveforms [N, C, L], got examples of shape {list(shape)}; use "
                             "audio data (audio:PATH, fsdd:PATH)")
        return {**kwargs, "in_channels": shape[0], "length": shape[1], "num_classes": num_classes}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNet1D":
        """Build a model from ``config()`` output."""
        return cls(**config)

    def forward(self, x: Tensor, c_noise: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Map x [B, in_channels, L], noise input [B] (or scalar) and labels [B] to [B, out_channels, L]."""
        b, _, length = x.shape
        f, p = self.downsample_factor, self.patch_size
        if length % f:
            raise ValueError(f"UNet1D needs a length that is a multiple of {f} (patches of {p}, then "
                             f"{self._config['factors']}), got {length}; crop or pad the clips to "
                             f"{-(-length // f) * f}")
        emb = self.embed(c_noise, cond, b, x.device)
        h = run_levels(self.down, self.mid, self.up, self.conv_in(fold_patches(x, p)), emb)
        return unfold_patches(self.conv_out(F.silu(self.norm_out(h))), p)
