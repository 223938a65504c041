"""A pre-norm transformer over token ids [B, L] -> logits [B, L, V_out], bidirectional or causal.

The network of masked (absorbing-state) diffusion language models (Sahoo et al. 2024, MDLM) and, with
``causal=True``, of the autoregressive baseline of the same size (as nanoGPT's GPT). Positions are rotary
(Su et al. 2021) or learned; the time conditioning, when switched on, is adaLN as in DiT (Peebles & Xie 2023).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rediffuse.nets.embedding import NoiseEmbedding
from rediffuse.core.kv_cache import KVCache
from rediffuse.nets.rotary import apply_rotary, rotary_tables

NORMS = ("layer", "rms")
POSITIONS = ("rotary", "learned")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x [..., dim]."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(norm: str, dim: int) -> nn.Module:
    """A LayerNorm ('layer') or an RMSNorm ('rms') over ``dim`` features, with a learned scale."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use 'layer' or 'rms'")
    return nn.LayerNorm(dim) if norm == "layer" else RMSNorm(dim)


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: h * (1 + scale) + shift with per-sample scale and shift [B, 1, dim]."""
    return torch.addcmul(shift, h, 1 + scale)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``, with rotary queries and keys."""

    def __init__(self, dim: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None, mask: Tensor | None = None,
                past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over x [B, L, dim] (and the cached keys and values `past`, each [B, heads, P, d], all visible);
        ``rotary`` the (cos, sin) tables at x's positions or None; ``mask`` [L, L] (True: may attend) replaces
        the causal rule among x's tokens. Returns the output and x's (keys, values)."""
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        new = (k, v)
        causal = self.causal and mask is None
        if past is not None:
            if causal and length > 1:
                mask, causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril(), False
            if mask is not None:
                seen = torch.ones(length, past[0].shape[2], dtype=torch.bool, device=x.device)
                mask = torch.cat([seen, mask], 1)
            k, v, causal = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2), False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim)), new


class Block(nn.Module):
    """x + g1 Attn(norm1(x)), then + g2 MLP(norm2(x)); adaLN scales, shifts and gates (1 + g) when timed."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, causal: bool, norm: str,
                 time_dim: int | None) -> None:
        super().__init__()
        hidden = max(1, round(mlp_ratio * dim))
        self.norm1, self.norm2 = make_norm(norm, dim), make_norm(norm, dim)
        self.attn = SelfAttention(dim, heads, dropout, causal)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ada = nn.Linear(time_dim, 6 * dim) if time_dim else None  # zeroed by Transformer: identity at init

    def forward(self, x: Tensor, emb: Tensor | None, rotary: tuple[Tensor, Tensor] | None,
                mask: Tensor | None = None, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Map x [B, L, dim] with the time embedding [B, time_dim] (or None) to [B, L, dim]; also x's attention
        keys and values (`SelfAttention`)."""
        if self.ada is None or emb is None:
            out, kv = self.attn(self.norm1(x), rotary, mask, past)
            x = x + self.drop(out)
            return x + self.drop(self.mlp(self.norm2(x))), kv
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(emb)[:, None, :].chunk(6, dim=-1)
        out, kv = self.attn(modulate(self.norm1(x), shift1, scale1), rotary, mask, past)
        x = x + (1 + gate1) * self.drop(out)
        return x + (1 + gate2) * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2))), kv


class Transformer(nn.Module):
    """Transformer ``F(tokens, c_noise=None, cond=None)``: token ids [B, L] -> logits [B, L, out_size].

    Inputs are the ``vocab_size`` real tokens plus, with ``mask_token``, the mask id ``vocab_size`` (so
    ``vocab_size + 1`` input ids); outputs ``out_size`` logits (default ``vocab_size``). ``causal=False``
    attends both ways (masked diffusion), ``causal=True`` only to the past (the autoregressive baseline).
    With ``time_conditioning`` the noise input c_noise ([B] or a scalar, whatever the objective feeds)
    drives, through its sinusoidal embedding, per-block adaLN shifts, scales and gates (1 + g) whose layer
    starts at zero, so at initialisation the network is the time-agnostic one; without it c_noise is ignored.
    ``tie_weights`` reads the output head from the first ``out_size`` rows of the input embedding.
    """

    registry_name = "transformer"  # its name in NETS and in saved configs

    num_classes = None  # no class conditioning

    def __init__(self, vocab_size: int, dim: int = 256, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 max_len: int = 256, dropout: float = 0.0, causal: bool = False, time_conditioning: bool = False,
                 positions: str = "rotary", norm: str = "layer", tie_weights: bool = True,
                 mask_token: bool = True, out_size: int | None = None, time_dim: int = 128) -> None:
        super().__init__()
        out_size = vocab_size if out_size is None else out_size
        in_size = vocab_size + int(mask_token)
        _check(vocab_size, dim, depth, heads, max_len, dropout, positions, norm, out_size, time_dim)
        if tie_weights and out_size > in_size:
            raise ValueError(f"tie_weights needs out_size <= the {in_size} input ids, got {out_size}; "
                             "pass tie_weights=False")
        self._config: dict[str, Any] = dict(
            vocab_size=vocab_size, dim=dim, depth=depth, heads=heads, mlp_ratio=float(mlp_ratio),
            max_len=max_len, dropout=float(dropout), causal=bool(causal),
            time_conditioning=bool(time_conditioning), positions=positions, norm=norm,
            tie_weights=bool(tie_weights), mask_token=bool(mask_token), out_size=out_size, time_dim=time_dim)
        self.vocab_size, self.in_size, self.out_size, self.max_len = vocab_size, in_size, out_size, max_len
        self.mask_id = vocab_size if mask_token else None
        self.causal, self.time_conditioning = bool(causal), bool(time_conditioning)
        self.embed = nn.Embedding(in_size, dim)
        self.pos = nn.Embedding(max_len, dim) if positions == "learned" else None
        if positions == "rotary":
            cos, sin = rotary_tables(max_len, dim // heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        timed = time_dim if time_conditioning else None
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, causal, norm, timed) for _ in range(depth))
        self.norm_out = make_norm(norm, dim)
        self.ada_out = nn.Linear(time_dim, 2 * dim) if time_conditioning else None
        self.head = None if tie_weights else nn.Linear(dim, out_size, bias=False)
        self.time_embed = NoiseEmbedding(time_dim) if time_conditioning else None
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """N(0, 0.02) weights, residual projections N(0, 0.02 / sqrt(2 depth)) (GPT-2), adaLN layers zero."""
        for name, module in self.named_modules():
            if name.startswith("time_embed"):
                continue  # the shared noise embedding keeps its own initialisation
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for layer in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * depth))
        for ada in [b.ada for b in self.blocks] + [self.ada_out]:
            if ada is not None:
                nn.init.zeros_(ada.weight)
                nn.init.zeros_(ada.bias)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-serialisable dict."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Transformer":
        """Build a model from ``config()`` output."""
        return cls(**config)

    def forward(self, tokens: Tensor, c_noise: Tensor | float | None = None, cond: Tensor | None = None, *,
                positions: Tensor | None = None, mask: Tensor | None = None, cache: KVCache | None = None
                ) -> Tensor:
        """Logits [B, L, out_size] (float32) of token ids [B, L] at noise input c_noise ([B], a scalar or None).

        ``positions`` [L] (default: after the cache's, else 0..L-1) place the tokens; ``mask`` [L, L] (True: may
        attend) replaces the causal or bidirectional rule among them; with ``cache`` they also attend to every
        cached token, and their keys and values join the cache when it is `recording`.
        """
        if tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError(f"Transformer expects integer token ids [B, L], got {tokens.dtype} of shape "
                             f"{tuple(tokens.shape)}")
        b, length = tokens.shape
        if cond is not None:
            raise ValueError("the transformer has no class conditioning; pass cond=None")
        if positions is None:
            start = 0 if cache is None else cache.next_position
            positions = torch.arange(start, start + length, device=tokens.device)
        if int(positions.max()) >= self.max_len:
            raise ValueError(f"sequence length {int(positions.max()) + 1} exceeds max_len {self.max_len}; build the "
                             "network with a larger max_len or use shorter windows")
        h = self.embed(tokens)
        if self.pos is not None:
            h = h + self.pos(positions)
        h = self.drop(h)
        emb = self._time_embedding(c_noise, b, tokens.device)
        rotary = None if self.pos is not None else (self.rope_cos[positions], self.rope_sin[positions])
        for i, block in enumerate(self.blocks):
            h, kv = block(h, emb, rotary, mask, None if cache is None else cache.layer(i))
            if cache is not None and cache.recording:
                cache.add(i, *kv)
        if cache is not None and cache.recording:
            cache.advance(positions)
        h = self.norm_out(h)
        if self.ada_out is not None and emb is not None:
            shift, scale = self.ada_out(emb)[:, None, :].chunk(2, dim=-1)
            h = modulate(h, shift, scale)
        return self.head(h) if self.head is not None else F.linear(h, self.embed.weight[: self.out_size])

    def _time_embedding(self, c_noise: Tensor | float | None, batch: int, device: torch.device) -> Tensor | None:
        """SiLU of the noise embedding [B, time_dim], or None for a time-agnostic network."""
        if self.time_embed is None:
            return None
        if c_noise is None:
            raise ValueError("this transformer is time-conditioned; pass c_noise ([B] or a scalar)")
        c = torch.as_tensor(c_noise, device=device)
        c = c.expand(batch) if c.ndim == 0 else c
        if c.shape != (batch,):
            raise ValueError(f"c_noise must be a scalar or shape [{batch}], got {tuple(c.shape)}")
        return F.silu(self.time_embed(c))


def _check(vocab_size: int, dim: int, depth: int, heads: int, max_len: int, dropout: float, positions: str,
           norm: str, out_size: int, time_dim: int) -> None:
    """ValueError naming the first invalid size or option."""
    for name, value in dict(vocab_size=vocab_size, dim=dim, depth=depth, heads=heads, max_len=max_len,
                            out_size=out_size, time_dim=time_dim).items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if dim % heads:
        raise ValueError(f"dim {dim} is not divisible by heads {heads}; choose heads dividing dim")
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}; use 'rotary' or 'learned'")
    if positions == "rotary" and (dim // heads) % 2:
        raise ValueError(f"rotary positions need an even head dimension, got dim/heads = {dim // heads}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use 'layer' or 'rms'")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
