"""The parts every UNet here shares, for feature maps of any number of axes [B, C, ...]: residual blocks with
scale-shift noise conditioning, self-attention over positions, and the down / middle / up level structure."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvFactory = Callable[[int, int], nn.Module]  # (in channels, out channels) -> a size-preserving convolution


def _groups(ch: int) -> int:
    """GroupNorm group count for ``ch`` channels: min(32, ch // 4), lowered until it divides ``ch``."""
    g = min(32, max(1, ch // 4))
    while ch % g:
        g -= 1
    return g


def _heads(ch: int, head_channels: int) -> int:
    """Attention head count: about ``ch / head_channels``, lowered until it divides ``ch``."""
    n = max(1, ch // head_channels)
    while ch % n:
        n -= 1
    return n


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block: GroupNorm-SiLU-conv, then adaptive GroupNorm (noise scale-shift)-SiLU-dropout-conv.

    ``conv`` builds the two size-preserving convolutions and ``skip`` the 1x1 projection used when the
    channel count changes (2-D layers by default).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, conv: ConvFactory | None = None,
                 skip: ConvFactory | None = None) -> None:
        super().__init__()
        conv = conv or (lambda i, o: nn.Conv2d(i, o, 3, padding=1))
        skip = skip or (lambda i, o: nn.Conv2d(i, o, 1))
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = conv(in_ch, out_ch)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch, affine=False)  # the scale-shift is its affine
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _zero(conv(out_ch, out_ch))
        self.skip = skip(in_ch, out_ch) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, scale_shift: Tensor | None = None) -> Tensor:
        """Map x [B, in_ch, ...] and the activated embedding [B, emb_dim] to [B, out_ch, ...].

        ``scale_shift`` [B, 2 * out_ch], if given, is ``self.emb(emb)`` computed by the caller (see
        `stacked_scale_shifts`, which projects the embedding for all blocks in one matrix product).
        """
        h = self.conv1(F.silu(self.norm1(x)))
        ss = self.emb(emb) if scale_shift is None else scale_shift
        scale, shift = ss.view(*ss.shape, *[1] * (h.ndim - 2)).chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        return self.skip(x) + self.conv2(self.dropout(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a feature map, with a residual connection."""

    def __init__(self, ch: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = _heads(ch, head_channels)
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = _zero(nn.Linear(ch, ch))

    def forward(self, x: Tensor) -> Tensor:
        """Attend x [B, C, ...] to itself; same shape out."""
        b, c = x.shape[:2]
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, N, C]; a view for channels_last input
        n = tokens.shape[1]
        q, k, v = self.qkv(tokens).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return x + self.proj(out).transpose(1, 2).unflatten(2, x.shape[2:])


class Block(nn.Module):
    """A residual block optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor, scale_shift: Tensor | None = None) -> Tensor:
        """Apply the residual block (``scale_shift``: see `ResBlock.forward`), then attention if present."""
        x = self.res(x, emb, scale_shift)
        return self.attn(x) if self.attn is not None else x


BlockFactory = Callable[[int, int, bool], Block]  # (in channels, out channels, attention?) -> Block
Resampler = Callable[[int, int], nn.Module]  # (channels, level) -> a down- or up-sampling layer


def build_levels(channels: int, mults: tuple[int, ...], num_res_blocks: int, attn: list[bool], block: BlockFactory,
                 down: Resampler, up: Resampler, mid_attention: bool
                 ) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList, int]:
    """(down, mid, up module lists, final channels) of a UNet whose level i has channels * mults[i] channels.

    Going down, each level has `num_res_blocks` blocks, then (except the last) `down(ch, i)`; the middle is
    an attention block and a plain one; going up, each level has num_res_blocks + 1 blocks, each fed the
    matching skip, then (except the first) `up(ch, i)`. attn[i] says whether level i's blocks attend.
    """
    down_list, up_list = nn.ModuleList(), nn.ModuleList()
    skip_chs, ch = [channels], channels
    for i, mult in enumerate(mults):
        for _ in range(num_res_blocks):
            down_list.append(block(ch, channels * mult, attn[i]))
            ch = channels * mult
            skip_chs.append(ch)
        if i < len(mults) - 1:
            down_list.append(down(ch, i))
            skip_chs.append(ch)
    mid = nn.ModuleList([block(ch, ch, mid_attention), block(ch, ch, False)])
    for i in reversed(range(len(mults))):
        for _ in range(num_res_blocks + 1):
            up_list.append(block(ch + skip_chs.pop(), channels * mults[i], attn[i]))
            ch = channels * mults[i]
        if i > 0:
            up_list.append(up(ch, i))
    return down_list, mid, up_list, ch


def stacked_scale_shifts(blocks: list[Block], emb: Tensor) -> Iterator[Tensor]:
    """Every block's ``res.emb(emb)`` in order, as one Linear over the blocks' stacked weights.

    The same parameters and function as one small Linear per block, in one matrix product.
    """
    layers = [b.res.emb for b in blocks]
    weight = torch.cat([layer.weight for layer in layers])
    bias = torch.cat([layer.bias for layer in layers])
    return iter(F.linear(emb, weight, bias).split([layer.out_features for layer in layers], dim=1))


def run_levels(down: nn.ModuleList, mid: nn.ModuleList, up: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
    """The UNet trunk of `build_levels` on the first layer's output h: down with skips, middle, up."""
    blocks = [m for ms in (down, mid, up) for m in ms if isinstance(m, Block)]
    scale_shifts = stacked_scale_shifts(blocks, emb)
    skips = [h]
    for m in down:
        h = m(h, emb, next(scale_shifts)) if isinstance(m, Block) else m(h)
        skips.append(h)
    for m in mid:
        h = m(h, emb, next(scale_shifts))
    for m in up:
        h = m(torch.cat([h, skips.pop()], dim=1), emb, next(scale_shifts)) if isinstance(m, Block) else m(h)
    return h
