"""Block diffusion of text (`--objective block`, BD3-LM, Arriola et al. 2025): masked diffusion within blocks of
`--block-tokens` L' tokens, each conditioned on the clean blocks before it (`rediffuse.core.block_diffusion` has
the formulas).

Each step draws one time per block, stratified over the batch's blocks and mapped onto the clipped masking rates
[`--mask-rate-min`, `--mask-rate-max`], masks every block at its rate (redrawing blocks whose masked share falls
outside the range), and minimises the per-window block NELBO estimate; the transformer reads the noisy and the
clean window in one pass under the block attention mask. The network is time-agnostic (a block's time is not an
input): the masked tokens' share tells it how far the block is. Samples are drawn block by block with a
key-value cache (`rediffuse.samplers.block`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rediffuse.core import block_diffusion as bd
from rediffuse.core import masking as masked
from rediffuse.core.spec import ModelSpec
from rediffuse.data.dataset import Data
from rediffuse.data.text import Vocabulary
from rediffuse.io import atomic_write_text
from rediffuse.keys import need, opt
from rediffuse.core.kv_cache import KVCache
from rediffuse.objectives.base import Batch, StepDraws, StepGenerators
from rediffuse.objectives.masked import PREVIEW_SAMPLES, Masked
from rediffuse.samplers.block import sample_blocks
from rediffuse.samplers.generation import sample_generators


@dataclass
class BlockKeys:
    """The keys of block diffusion."""

    block_tokens: int = opt(4, "block objective: L', the tokens of one diffusion block (a divisor of "
                               "--block-length; 1 is autoregressive, --block-length the masked model)")
    mask_rate_min: float = opt(0.0, "block objective: beta, the lowest masking rate drawn in training")
    mask_rate_max: float = opt(1.0, "block objective: omega, the highest masking rate drawn in training")


@dataclass(frozen=True, eq=False)
class BlockDraws(StepDraws):
    """One step's randomness: the blocks' times t [B, n] (float64) and the masked windows z_t [B, L]."""

    t: Tensor
    z: Tensor


class BlockLM(nn.Module):
    """x_theta of block diffusion: SUBS log-probabilities [B, L, V] of a noisy window given its clean copy (one
    pass), or of a noisy block given a key-value cache of the clean text before it."""

    time_agnostic = True  # the network never reads t: the ancestral sampler may reuse an unchanged block's output

    def __init__(self, net: nn.Module, schedule: masked.MaskSchedule, vocab: Vocabulary, block: int) -> None:
        super().__init__()
        self.net, self.schedule, self.vocab, self.mask_id, self.block = net, schedule, vocab, vocab.mask_id, block

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """log x_theta of every block of z [B, L] given x's blocks before it (float32)."""
        length = z.shape[1]
        positions = torch.arange(length, device=z.device).repeat(2)
        mask = bd.block_attention_mask(length, self.block, z.device)
        logits = self.net(torch.cat([z, x], 1), None, positions=positions, mask=mask)[:, :length]
        return masked.subs_log_probs(logits.float(), z, self.mask_id)

    def denoise(self, z: Tensor, cache: KVCache) -> Tensor:
        """log x_theta of the block z [B, L'] given the cached clean text (the cache is left as it was)."""
        cache.recording = False
        return masked.subs_log_probs(self.net(z, None, cache=cache).float(), z, self.mask_id)

    def up_to_own_block(self, length: int, device: torch.device) -> Tensor:
        """[length, length] attention mask (True: may attend) of whole blocks: each token sees its block and
        the blocks before it."""
        owner = torch.arange(length, device=device) // self.block
        return owner[:, None] >= owner[None, :]

    def commit(self, x: Tensor, cache: KVCache) -> None:
        """Add the clean tokens x [B, k L'] (whole blocks, each seeing the blocks before it) to the cache."""
        cache.recording = True
        self.net(x, None, cache=cache, mask=self.up_to_own_block(x.shape[1], x.device))
        cache.recording = False

    def denoise_after(self, done: Tensor, z: Tensor, cache: KVCache) -> Tensor:
        """`commit(done)` then `denoise(z)` in one pass: the clean whole blocks done [B, k L'] join the cache and
        the block z [B, L'] after them is denoised (one model call per block saved when sampling)."""
        k = done.shape[1]
        mask = self.up_to_own_block(k + z.shape[1], z.device)  # z, the last block, sees every clean block
        cache.recording, cache.keep = True, k
        try:
            logits = self.net(torch.cat([done, z], 1), None, cache=cache, mask=mask)[:, k:]
        finally:
            cache.recording, cache.keep = False, None
        return masked.subs_log_probs(logits.float(), z, self.mask_id)

    def nelbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A one-draw estimate [B] of the block NELBO of windows x [B, L] in nats per token (rates U[0, 1])."""
        t = bd.block_times(len(x), bd.blocks_of(x.shape[1], self.block), generator, device=x.device)
        z = bd.noise_blocks(x, t, self.block, self.schedule, self.mask_id, generator)
        return bd.block_nelbo(self(z, x), x, z, t, self.schedule, self.mask_id, self.block)


class Block(Masked):
    """Block diffusion of text data (`--objective block`)."""

    name = "block"

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        super().check()
        c = self.config
        need(c.mask_schedule == "log-linear", "the block objective clips masking rates of the log-linear schedule; "
                                              "drop --mask-schedule")
        need(c.block_tokens >= 1 and c.block_length % c.block_tokens == 0,
             f"--block-tokens {c.block_tokens} must be >= 1 and divide --block-length {c.block_length}")
        need(0.0 <= c.mask_rate_min < c.mask_rate_max <= 1.0,
             f"the masking rates need 0 <= --mask-rate-min < --mask-rate-max <= 1, got [{c.mask_rate_min}, "
             f"{c.mask_rate_max}]")
        need(not c.net_kwargs.get("time_conditioning", False),
             "the block objective trains a time-agnostic transformer; drop time_conditioning from --net-kwargs")

    def spec(self, data: Data) -> ModelSpec:
        """The masked objective's spec with the block length L'."""
        return super().spec(data).replace(block=self.config.block_tokens)

    def model(self, spec: ModelSpec, net: nn.Module) -> BlockLM:
        """The block model around net, with the spec's schedule, vocabulary and block length."""
        schedule = masked.MaskSchedule(spec.schedule["kind"], float(spec.schedule["eps"]))
        return BlockLM(net, schedule, Vocabulary.from_dict(spec.vocab), int(spec.block))

    def draw(self, model: BlockLM, batch: Batch, generators: StepGenerators) -> BlockDraws:
        """The blocks' clipped stratified times ("time", CPU) and the masked windows ("mask")."""
        x, c = batch.x, self.config
        blocks = bd.blocks_of(x.shape[1], model.block)
        t = bd.block_times(len(x), blocks, generators.cpu("time"), c.mask_rate_min, c.mask_rate_max).to(x.device)
        z = bd.noise_blocks(x, t, model.block, model.schedule, model.mask_id, generators.device("mask"),
                            c.mask_rate_min, c.mask_rate_max)
        return BlockDraws(t, z)

    def loss(self, model: BlockLM, batch: Batch, draws: BlockDraws) -> Tensor:
        """The per-window block NELBO estimate in nats per token [B] (`core.block_diffusion.block_nelbo`)."""
        return bd.block_nelbo(model(draws.z, batch.x), batch.x, draws.z, draws.t, model.schedule, model.mask_id,
                              model.block)

    @torch.no_grad()
    def preview(self, model: BlockLM, spec: ModelSpec, path: Path, device: torch.device) -> Path | None:
        """A text file (path with suffix .txt) of a few samples of one window, one step per token."""
        length = int(spec.data.shape[0])
        z = torch.full((PREVIEW_SAMPLES, length), model.mask_id, dtype=torch.long, device=device)
        x = sample_blocks(model, z, context=length,
                          generator=sample_generators(0, range(PREVIEW_SAMPLES), device))
        out = path.with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "\n=====\n".join(model.vocab.decode(row) for row in x.cpu()) + "\n")
        return out
