"""The autoregressive (AR) baseline of text: a causal transformer trained by next-token cross-entropy.

The same text windows x [B, L] as masked diffusion, the same transformer with ``causal=True`` (as nanoGPT's
GPT). The first token of a window is predicted from a beginning-of-sequence token: the network reads
[BOS, x_1, ..., x_{L-1}] and position l predicts x_{l+1}, so the per-window loss is the exact negative
log-likelihood of the whole window in nats per token,

    -(1/L) sum_{l=1}^{L} log p_theta(x_l | BOS, x_<l),

the quantity masked diffusion's NELBO bounds for the same window (so held-out figures compare directly). BOS is
the transformer's extra input id (id V, the mask token of a masked run), so both networks have the same
parameters. Training needs no randomness (`draw` returns {}). The model is `CausalLM(x) -> log-probs [B, L, V]`
of each token given the tokens before it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from rediffuse.data.dataset import Data
from rediffuse.data.text import Vocabulary
from rediffuse.io import atomic_write_text
from rediffuse.core.kv_cache import KVCache
from rediffuse.core.spec import ModelSpec
from rediffuse.objectives.base import Batch, NoDraws, StepGenerators
from rediffuse.objectives.masked import PREVIEW_SAMPLES, Masked
from rediffuse.samplers.autoregressive import sample_autoregressive
from rediffuse.samplers.generation import sample_generators


class CausalLM(nn.Module):
    """log p_theta(x_l | BOS, x_<l): log-probabilities [B, L, V] of a causal transformer over token ids x [B, L]."""

    def __init__(self, net: nn.Module, vocab: Vocabulary) -> None:
        super().__init__()
        self.net, self.vocab, self.bos_id = net, vocab, vocab.mask_id

    def forward(self, x: Tensor) -> Tensor:
        """Per-position next-token log-probabilities in float32; x[:, -1] is never read."""
        inputs = torch.cat([torch.full_like(x[:, :1], self.bos_id), x[:, :-1]], dim=1)
        return torch.log_softmax(self.net(inputs, None).float(), dim=-1)

    def step(self, tokens: Tensor, cache: KVCache, bos: bool = False) -> Tensor:
        """log p(next token | the cached tokens, tokens [B, k]) [B, V]; `bos` puts BOS first (a fresh cache)."""
        if bos:
            bos = torch.full((len(tokens), 1), self.bos_id, dtype=tokens.dtype, device=tokens.device)
            tokens = torch.cat([bos, tokens], dim=1)
        return torch.log_softmax(self.net(tokens, None, cache=cache)[:, -1].float(), dim=-1)

    def nll(self, x: Tensor) -> Tensor:
        """The exact negative log-likelihood [B] of each window x [B, L] in nats per token."""
        return -self(x).gather(-1, x.unsqueeze(-1)).squeeze(-1).mean(-1)


class Autoregressive(Masked):
    """Next-token prediction of text data with a causal transformer (`--objective autoregressive`)."""

    name = "autoregressive"
    causal = True  # each position attends to itself and the past only

    def spec(self, data: Data) -> ModelSpec:
        """The masked objective's spec with a causal network, the BOS id and no schedule."""
        return super().spec(data).replace(schedule=None, mask_id=None, bos_id=data.vocab.mask_id)

    def model(self, spec: ModelSpec, net: nn.Module) -> CausalLM:
        """The causal model around net, with the spec's vocabulary."""
        return CausalLM(net, Vocabulary.from_dict(spec.vocab))

    def draw(self, model: CausalLM, batch: Batch, generators: StepGenerators) -> NoDraws:
        """Nothing: the loss of a window is deterministic."""
        return NoDraws()

    def loss(self, model: CausalLM, batch: Batch, draws: NoDraws) -> Tensor:
        """The per-window next-token cross-entropy in nats per token, shape [B]."""
        return model.nll(batch.x)

    @torch.no_grad()
    def preview(self, model: CausalLM, spec: ModelSpec, path: Path, device: torch.device) -> Path | None:
        """A text file (path with suffix .txt) of a few samples of one window, drawn left to right."""
        length = int(spec.data.shape[0])
        z = torch.full((PREVIEW_SAMPLES, length), model.bos_id, dtype=torch.long, device=device)
        x = sample_autoregressive(model, z, 0, generator=sample_generators(0, range(PREVIEW_SAMPLES), device),
                                  context=length)
        out = path.with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "\n=====\n".join(model.vocab.decode(row) for row in x.cpu()) + "\n")
        return out
