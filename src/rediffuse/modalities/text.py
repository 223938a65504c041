"""Text (token ids [N, L]) from a masked-diffusion, block-diffusion or autoregressive run: samples as JSON lines
or plain text, the reverse process of sample 0 as text, a PNG strip or a GIF. Block-diffusion and autoregressive
runs sample left to right with a key-value cache and may be asked for more than their training context
(`--length`); a block run's `--steps` count per block.

Sample i is drawn from its own generator seeded by (seed, i), so it does not depend on -n or the batch size.
A prompt fixes a prefix; an infill template keeps every character except the blanks, which are filled. An
autoregressive run samples left to right, with a prompt but no infill, steps, order or trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from rediffuse.data.text import TOKEN_KINDS, Vocabulary
from rediffuse.keys import need, need_positive_ints, opt
from rediffuse.errors import UsageError
from rediffuse.io import atomic_write_text
from rediffuse.modalities.base import Drawn, Extras, Modality, refuse_suffix
from rediffuse.samplers import generation
from rediffuse.samplers.autoregressive import sample_autoregressive
from rediffuse.samplers.block import sample_blocks
from rediffuse.samplers.generation import sample_generators
from rediffuse.samplers.masked import ORDERS, sample_masked
from rediffuse.samplers.request import Grid, OnStep, SamplingRequest, Step
from rediffuse.viz.text import text_trajectory_gif, text_trajectory_png

@dataclass
class TextKeys:
    """The keys of text data."""

    tokens: str = opt("char", "text data: char (the training text's characters) or bytes (UTF-8 bytes)")
    block_length: int = opt(256, "text data: the length of the training windows, in tokens")


SEPARATOR = "====="  # the line between samples of a .txt file
TRAJECTORIES = (".txt", ".png", ".gif")
SNAPSHOTS = 16  # reverse-process states of sample 0 in a .txt trajectory


class Text(Modality):
    """Characters or bytes as token ids, learned by masked diffusion or autoregressively."""

    name = "text"
    a_run = "a text run"
    keys = TextKeys  # the config keys this kind of data reads
    windows = True
    default_n = 16
    edit_route = "template"  # `rediffuse edit --infill TEMPLATE`
    eval_metrics = ("nelbo", "nll")  # an autoregressive run answers either with its exact NLL

    def check_keys(self, config: Any) -> None:
        """ConfigError naming the first invalid text key."""
        need_positive_ints(config, ("block_length",))
        need(config.tokens in TOKEN_KINDS, f"unknown tokens {config.tokens!r}; choose one of {', '.join(TOKEN_KINDS)}")

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """A transformer."""
        return "transformer"

    def keeps_steps(self, trajectory: Path | None) -> bool:
        """With a trajectory (sample 0's states)."""
        return trajectory is not None

    def default_out(self, run_dir: Path) -> Path:
        """RUN/samples.jsonl."""
        return run_dir / "samples.jsonl"

    def check_out(self, out: Path) -> None:
        """A .jsonl or .txt path."""
        refuse_suffix(out, (".jsonl", ".txt"), "a text run")

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """The one file of samples."""
        return [out]

    def check_request(self, spec: dict[str, Any], request: SamplingRequest, trajectory: Path | None) -> None:
        """UsageError for classes, guidance, samplers and grids (Gaussian options) and a bad blank or trajectory."""
        if request.labels is not None or request.guidance != 1.0:
            raise UsageError("--class and --guidance need a class-conditional run; a text run has no classes")
        if len(request.blank) != 1:
            raise UsageError(f"--blank must be one character, got {request.blank!r}")
        if request.spacing != "default":
            raise UsageError("--spacing is for points and image runs; drop it for a text run")
        if request.sampler is not None:
            raise UsageError(f"--sampler {request.sampler} is for points and image runs; a text run samples with "
                             "--order (random: ancestral, or confidence): drop --sampler")
        if request.order not in ORDERS:
            raise UsageError(f"--order must be one of {', '.join(ORDERS)}, got {request.order!r}")
        if spec.bos_id is not None:
            refuse_for_causal(request, trajectory)
        if trajectory is not None and trajectory.suffix.lower() not in TRAJECTORIES:
            raise UsageError(f"--trajectory for a text run must end in .txt, .png or .gif, got {str(trajectory)!r}")

    def draw(self, model: nn.Module, spec: dict[str, Any], request: SamplingRequest, grid: Grid,
             on_step: OnStep | None = None, progress: Callable[[int], None] | None = None,
             world: generation.Ranks | None = None) -> Drawn:
        """The request's texts, filled in from its template; sample i from its (seed, i) generator."""
        vocab, context = Vocabulary.from_dict(spec.vocab), int(spec.net_config["max_len"])
        causal, block = spec.bos_id is not None, spec.block
        z = template(request, vocab, None if causal or block else context, int(spec.data.shape[0]))
        if causal:
            refuse_for_causal(request, None)
        steps = (block or len(z)) if request.steps is None else request.steps
        rows = []
        with torch.no_grad():
            for first in range(0, request.n, request.batch_size):
                idx = range(first, min(request.n, first + request.batch_size))
                batch = z.to(request.device).expand(len(idx), -1).contiguous()
                gens = sample_generators(request.seed, idx, request.device)
                callback = None if on_step is None else _steps_to(on_step, first, vocab.mask_id, len(z), causal)
                if causal:
                    start = int((z != vocab.mask_id).sum())
                    x = sample_autoregressive(model, batch, start, generator=gens, callback=callback,
                                              context=context)
                elif block:
                    x = sample_blocks(model, batch, steps, context=context, generator=gens, order=request.order,
                                      callback=callback)
                else:
                    x = sample_masked(model, batch, steps, schedule=model.schedule, mask_id=model.mask_id,
                                      generator=gens, order=request.order, callback=callback)
                rows.append(x.cpu())
                if progress is not None:
                    progress(len(idx))
        settings = {"seed": request.seed, "order": "left-to-right", "length": len(z)} if causal else \
            {"seed": request.seed, "steps": steps, "order": request.order, "length": len(z),
             **({"block": block, "steps_per": "block"} if block else {})}
        return Drawn(torch.cat(rows), None, start=z, settings=settings)

    def write(self, out: Path, drawn: Drawn, spec: dict[str, Any], extras: Extras) -> list[Path]:
        """The samples as JSON lines (with index and settings) or plain text separated by lines of =====, and
        sample 0's reverse process when a trajectory was asked for."""
        vocab = Vocabulary.from_dict(spec.vocab)
        texts = [vocab.decode(row) for row in drawn.samples]
        if out.suffix.lower() == ".txt":
            written = [atomic_write_text(out, f"\n{SEPARATOR}\n".join(texts) + "\n")]
        else:
            lines = [json.dumps({"index": i, "text": text, **drawn.settings}, ensure_ascii=False)
                     for i, text in enumerate(texts)]
            written = [atomic_write_text(out, "\n".join(lines) + "\n")]
        if extras.trajectory is not None:
            snapshots = [(step.level, step.x[0].cpu()) for step in drawn.steps if step.first == 0]
            start = [] if drawn.start is None else [(1.0, drawn.start)]
            written.append(write_trajectory(extras.trajectory, start + snapshots, vocab, extras.blank))
        return written


def _encode(vocab: Vocabulary, text: str, flag: str) -> list[int]:
    """Token ids of an option's text; UsageError naming a character the run never saw."""
    try:
        return vocab.encode(text).tolist()
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def template(request: SamplingRequest, vocab: Vocabulary, max_len: int | None, default_length: int) -> Tensor:
    """The ids [L] every sample starts from: the prompt or the infill template, mask ids where to fill; a length
    above max_len is refused (None: a left-to-right sampler runs past the context)."""
    if request.prompt is not None and request.infill is not None:
        raise UsageError("--prompt and --infill exclude each other; put the prefix into the --infill template")
    if request.infill is not None:
        ids: list[int] = []
        for i, piece in enumerate(request.infill.split(request.blank)):
            ids += ([vocab.mask_id] if i else []) + _encode(vocab, piece, "--infill")
        if request.length is not None and request.length != len(ids):
            raise UsageError(f"--length {request.length} differs from the {len(ids)} tokens of the --infill "
                             "template; drop --length (the template sets it)")
        length = len(ids)
    else:
        ids = _encode(vocab, request.prompt, "--prompt") if request.prompt else []
        length = default_length if request.length is None else request.length
        if length < max(1, len(ids)):
            raise UsageError(f"--length {length} is shorter than the {len(ids)} tokens of the prompt; give "
                             f"--length {max(1, len(ids))} or more")
    if max_len is not None and length > max_len:
        raise UsageError(f"--length {length} exceeds the network's max_len {max_len}; give at most {max_len}")
    z = torch.full((length,), vocab.mask_id, dtype=torch.long)
    z[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    return z


def refuse_for_causal(request: SamplingRequest, trajectory: Path | None) -> None:
    """UsageError for the options an autoregressive run cannot honour."""
    for given, flag in [(request.infill is not None, "--infill"), (request.steps is not None, "--steps"),
                        (request.order != "random", "--order"), (trajectory is not None, "--trajectory")]:
        if given:
            raise UsageError(f"{flag} is for masked-diffusion runs; an autoregressive run samples left to right "
                             f"(one token per step): drop {flag}")


def _steps_to(on_step: OnStep, first: int, mask_id: int, length: int, causal: bool
              ) -> Callable[[dict[str, Any]], None]:
    """A text sampler's callback giving each step to on_step: the tokens after it, at their masking level,
    and the estimate with every mask filled by its likeliest token."""
    def callback(info: dict[str, Any]) -> None:
        z = info["z"]
        if causal:
            level, estimate = (length - 1 - info["k"]) / length, z
        elif "estimate" in info:  # block by block: the share of the sequence still masked
            level, estimate = float((z == mask_id).double().mean()), info["estimate"]
        else:
            level = float(info["s"])
            estimate = torch.where(z == mask_id, info["log_probs"].argmax(-1), z) if info["log_probs"].numel() else z
        on_step(Step(info["i"], level, z, estimate, first))

    return callback


def write_trajectory(path: Path, snapshots: list[tuple[float, Tensor]], vocab: Vocabulary, blank: str) -> Path:
    """Sample 0's reverse process: a .png strip, a .gif of every step, or (.txt) up to SNAPSHOTS evenly spaced
    states, each headed by its time, masks drawn as `blank`."""
    if path.suffix.lower() in (".png", ".gif"):
        states = [(t, [None if i == vocab.mask_id else vocab.decode(torch.tensor([i])) for i in ids.tolist()])
                  for t, ids in snapshots]
        draw = text_trajectory_png if path.suffix.lower() == ".png" else text_trajectory_gif
        return draw(path, states)
    picks = sorted({round(k * (len(snapshots) - 1) / (SNAPSHOTS - 1)) for k in range(SNAPSHOTS)})
    parts = [f"--- t = {snapshots[i][0]:.4f}\n{vocab.decode(snapshots[i][1], mask=blank)}" for i in picks]
    return atomic_write_text(path, "\n".join(parts) + "\n")
