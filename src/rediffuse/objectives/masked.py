"""Masked (absorbing-state) diffusion of text: t stratified over the batch, z_t ~ q(z_t | x), loss the NELBO.

Each step draws t_i = (u + i / B) mod 1 (`rediffuse.core.masking.stratified_times`), masks every token of window i
with probability 1 - alpha(t_i), and minimises the per-sequence Monte Carlo NELBO in nats per token

    w(t) sum_{l : z_t^l = m} -log x_theta(z_t)_l[x^l] / L,   w(t) = -alpha'(t) / (1 - alpha(t))  (1/t log-linear),

with x_theta the SUBS distribution of a transformer (Sahoo et al. 2024, MDLM; Shi et al. 2024, MD4); the
formulas and their derivation are in `rediffuse.core.masking`. The model is `MaskedLM(z, t) -> log-probs [B, L, V]`
over the V real tokens; the mask id is V. The vocabulary is saved in the model spec, so sampling and
evaluation rebuild it without the text file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rediffuse.core import masking as masked
from rediffuse.data.dataset import Data
from rediffuse.data.text import Vocabulary
from rediffuse.keys import need, opt
from rediffuse.errors import ConfigError
from rediffuse.io import atomic_write_text
from rediffuse.nets import NETS
from rediffuse.core.spec import DataInfo, ModelSpec
from rediffuse.objectives.base import Batch, Configured, StepDraws, StepGenerators
from rediffuse.samplers.generation import sample_generators
from rediffuse.samplers.masked import masked_template, sample_masked

@dataclass
class MaskedKeys:
    """The keys of masked (absorbing-state) token diffusion."""

    mask_schedule: str = opt("log-linear", "masked objective: the masking schedule, log-linear or cosine")


PREVIEW_SAMPLES = 4  # texts in a training preview


@dataclass(frozen=True, eq=False)
class MaskedDraws(StepDraws):
    """One step's randomness: stratified times t [B] (float64) and the masked windows z_t [B, L]."""

    t: Tensor
    z: Tensor


class MaskedLM(nn.Module):
    """x_theta(z_t): SUBS log-probabilities [B, L, V] of a transformer over token ids z [B, L] at times t [B]."""

    def __init__(self, net: nn.Module, schedule: masked.MaskSchedule, vocab: Vocabulary) -> None:
        super().__init__()
        self.net, self.schedule, self.vocab, self.mask_id = net, schedule, vocab, vocab.mask_id
        self.time_agnostic = not getattr(net, "module", net).time_conditioning

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """log x_theta(z_t) in float32; the network sees t ([B], float) only if it is time-conditioned."""
        c_noise = None if self.time_agnostic else t.float()
        return masked.subs_log_probs(self.net(z, c_noise).float(), z, self.mask_id)

    def nelbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A one-draw estimate [B] of the NELBO of windows x [B, L] in nats per token (t stratified)."""
        t = masked.stratified_times(len(x), generator, x.device)
        z = masked.mask(x, t, self.schedule, self.mask_id, generator)
        return masked.masked_nelbo(self(z, t), x, z, t, self.schedule, self.mask_id)


class Masked(Configured):
    """Masked token diffusion of text data (`--objective masked`)."""

    name = "masked"
    causal = False  # the network attends both ways

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        c = self.config
        need(c.net in ("auto", "transformer"), f"the {self.name} objective trains a transformer, got net "
                                                f"{c.net!r}; use --net transformer (or auto)")
        need(c.mask_schedule in masked.KINDS,
             f"unknown mask_schedule {c.mask_schedule!r}; choose one of {', '.join(masked.KINDS)}")
        need(not c.conditional, f"the {self.name} objective has no classes; drop --conditional")
        need(c.data.startswith("text:"), f"the {self.name} objective trains on text, got data {c.data!r}; "
                                         "use --data text:PATH (or text:PATH@train)")

    def spec(self, data: Data) -> ModelSpec:
        """The model: transformer config, vocabulary, mask id, schedule and data."""
        c = self.config
        if data.vocab is None:
            raise ConfigError(f"the {self.name} objective trains on text, got {data.kind} data {c.data!r}; "
                              "use --data text:PATH")
        if len(data.x) < c.block_length:
            raise ConfigError(f"the text has {len(data.x)} tokens, fewer than block_length {c.block_length}; use "
                              "a smaller --block-length or a longer text")
        vocab = data.vocab
        net_config = {"max_len": c.block_length, **c.net_kwargs, "vocab_size": vocab.size, "mask_token": True,
                      "out_size": vocab.size, "causal": self.causal}
        if net_config["max_len"] < c.block_length:
            raise ConfigError(f"net_kwargs max_len {net_config['max_len']} is below block_length "
                              f"{c.block_length}; raise max_len or lower --block-length")
        info = DataInfo("text", (c.block_length,), None, c.data, tokens=vocab.kind)
        return ModelSpec("transformer", net_config, info, schedule={"kind": c.mask_schedule, "eps": 0.0},
                         vocab=vocab.to_dict(), mask_id=vocab.mask_id)

    def build(self, spec: ModelSpec) -> nn.Module:
        """The transformer of a spec."""
        try:
            return NETS[spec.net].from_config(spec.net_config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad net_kwargs for the transformer: {' '.join(str(err).split())}") from None

    def model(self, spec: ModelSpec, net: nn.Module) -> MaskedLM:
        """The SUBS model around net, with the spec's schedule and vocabulary."""
        schedule = masked.MaskSchedule(spec.schedule["kind"], float(spec.schedule["eps"]))
        return MaskedLM(net, schedule, Vocabulary.from_dict(spec.vocab))

    def draw(self, model: MaskedLM, batch: Batch, generators: StepGenerators) -> MaskedDraws:
        """Stratified times t [B] (float64, CPU stream "time") and the masked windows z_t [B, L] ("mask")."""
        x = batch.x
        t = masked.stratified_times(len(x), generators.cpu("time")).to(x.device)
        z = masked.mask(x, t, model.schedule, model.mask_id, generators.device("mask"))
        return MaskedDraws(t, z)

    def loss(self, model: MaskedLM, batch: Batch, draws: MaskedDraws) -> Tensor:
        """The per-sequence NELBO estimate in nats per token (`rediffuse.core.masking.masked_nelbo`), shape [B]."""
        log_probs = model(draws.z, draws.t)
        return masked.masked_nelbo(log_probs, batch.x, draws.z, draws.t, model.schedule, model.mask_id)

    @torch.no_grad()
    def preview(self, model: MaskedLM, spec: ModelSpec, path: Path, device: torch.device) -> Path | None:
        """A text file (path with suffix .txt) of a few samples of one window, one reverse step per token."""
        length = int(spec.data.shape[0])
        z = masked_template(PREVIEW_SAMPLES, length, model.mask_id).to(device)
        x = sample_masked(model, z, length, schedule=model.schedule, mask_id=model.mask_id,
                          generator=sample_generators(0, range(PREVIEW_SAMPLES), device))
        texts = [model.vocab.decode(row) for row in x.cpu()]
        out = path.with_suffix(".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, "\n=====\n".join(texts) + "\n")
        return out
