"""`rediffuse sample` for text runs: masked-diffusion (or autoregressive) samples as JSON lines or plain text.

Sample i is drawn by `sample_masked` from its own generator seeded by (seed, i), so it does not depend on -n
or --batch-size. `--prompt TEXT` fixes a prefix; `--infill TEMPLATE` keeps every character of the template
except the blanks (`_`, or the one character of `--blank`), which are filled. Out: `.jsonl`, one object per
sample with at least "text"; `.txt`, the samples separated by a line `=====`. `--trajectory FILE.txt` shows
sample 0 emerging from the masks (drawn as the blank character) at up to 16 steps of the reverse process;
`--trajectory FILE.png` draws 6 of its states as a strip and `FILE.gif` animates every reverse step.
An autoregressive run samples left to right (`sample_autoregressive`), with --prompt but no --infill.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from rediffuse.cli.outputs import planned, refuse_overwrite
from rediffuse.config import resolve_device
from rediffuse.data.text import Vocabulary
from rediffuse.errors import UsageError
from rediffuse.io import atomic_write_text
from rediffuse.runs import load_model
from rediffuse.samplers.autoregressive import sample_autoregressive
from rediffuse.samplers.generation import sample_generators
from rediffuse.samplers.masked import ORDERS, sample_masked
from rediffuse.viz_text import text_trajectory_gif, text_trajectory_png

SEPARATOR = "====="  # the line between samples of a .txt file
SUFFIXES = (".jsonl", ".txt")
TRAJECTORIES = (".txt", ".png", ".gif")
SNAPSHOTS = 16  # reverse-process states of sample 0 in a --trajectory file


def add_text_flags(p: argparse.ArgumentParser) -> None:
    """The flags only text runs read."""
    p.add_argument("--length", type=int, default=None,
                   help="text runs: tokens per sample (default: the run's block length)")
    p.add_argument("--prompt", default=None, help="text runs: a fixed prefix of every sample")
    p.add_argument("--infill", default=None, metavar="TEMPLATE",
                   help="text runs: a template whose blank characters are filled, the rest kept exactly")
    p.add_argument("--blank", default="_", help="text runs: the blank character of --infill (default: _)")
    p.add_argument("--order", default="random", choices=ORDERS,
                   help="text runs: which masked tokens to reveal per step (default: random, the ancestral "
                        "sampler)")


def _encode(vocab: Vocabulary, text: str, flag: str) -> list[int]:
    """Token ids of a flag's text; UsageError naming a character the run never saw."""
    try:
        return vocab.encode(text).tolist()
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from None


def template(args: argparse.Namespace, vocab: Vocabulary, max_len: int, default_length: int) -> Tensor:
    """The ids [L] every sample starts from: the prompt or the infill template, mask ids where to fill."""
    if args.prompt is not None and args.infill is not None:
        raise UsageError("--prompt and --infill exclude each other; put the prefix into the --infill template")
    if args.infill is not None:
        ids: list[int] = []
        for i, piece in enumerate(args.infill.split(args.blank)):
            ids += ([vocab.mask_id] if i else []) + _encode(vocab, piece, "--infill")
        if args.length is not None and args.length != len(ids):
            raise UsageError(f"--length {args.length} differs from the {len(ids)} tokens of the --infill "
                             "template; drop --length (the template sets it)")
        length = len(ids)
    else:
        ids = _encode(vocab, args.prompt, "--prompt") if args.prompt else []
        length = default_length if args.length is None else args.length
        if length < max(1, len(ids)):
            raise UsageError(f"--length {length} is shorter than the {len(ids)} tokens of the prompt; give "
                             f"--length {max(1, len(ids))} or more")
    if length > max_len:
        raise UsageError(f"--length {length} exceeds the network's max_len {max_len}; give at most {max_len}")
    z = torch.full((length,), vocab.mask_id, dtype=torch.long)
    z[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    return z


def generate_texts(model: Any, z: Tensor, n: int, *, steps: int, seed: int, batch_size: int, order: str,
                   device: torch.device, snapshots: list[tuple[float, Tensor]] | None = None) -> Tensor:
    """n samples [n, L] filled in from the template z [L]; sample i from its (seed, i) generator.

    A given `snapshots` list receives (t, ids of sample 0) for the template and after every reverse step.
    """
    rows = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        batch = z.to(device).expand(len(idx), -1).contiguous()
        first = snapshots is not None and start == 0
        if first:
            snapshots.append((1.0, z.clone()))
        rows.append(sample_masked(model, batch, steps, schedule=model.schedule, mask_id=model.mask_id,
                                  generator=sample_generators(seed, idx, device), order=order,
                                  callback=_keeper(snapshots) if first else None).cpu())
    return torch.cat(rows)


def generate_causal(model: Any, z: Tensor, n: int, start: int, *, seed: int, batch_size: int,
                    device: torch.device) -> Tensor:
    """n samples [n, L] of an autoregressive model after the prompt z[:start]; sample i from its (seed, i) generator."""
    return torch.cat([sample_autoregressive(model, z.to(device).expand(len(idx), -1), start,
                                            generator=sample_generators(seed, idx, device)).cpu()
                      for idx in (range(i, min(n, i + batch_size)) for i in range(0, n, batch_size))])


def _check_causal(args: argparse.Namespace) -> None:
    """UsageError for the flags an autoregressive run cannot honour."""
    for given, flag in [(args.infill is not None, "--infill"), (args.steps is not None, "--steps"),
                        (args.order != "random", "--order"), (args.trajectory is not None, "--trajectory")]:
        if given:
            raise UsageError(f"{flag} is for masked-diffusion runs; an autoregressive run samples left to right "
                             f"(one token per step): drop {flag}")


def _keeper(snapshots: list[tuple[float, Tensor]]) -> Callable[[dict[str, Any]], None]:
    """A sampler callback appending (s, ids of sample 0) after each reverse step."""
    return lambda info: snapshots.append((info["s"], info["z"][0].cpu()))


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


def write_texts(out: Path, texts: list[str], settings: dict[str, Any]) -> Path:
    """The samples as JSON lines (with index and settings) or plain text separated by lines of =====."""
    if out.suffix.lower() == ".txt":
        return atomic_write_text(out, f"\n{SEPARATOR}\n".join(texts) + "\n")
    lines = [json.dumps({"index": i, "text": text, **settings}, ensure_ascii=False) for i, text in enumerate(texts)]
    return atomic_write_text(out, "\n".join(lines) + "\n")


def cmd_sample_text(args: argparse.Namespace, info: dict[str, Any]) -> int:
    """Sample a text run as `rediffuse sample` was asked."""
    if args.label is not None or args.guidance != 1.0:
        raise UsageError("--class and --guidance need a class-conditional run; a text run has no classes")
    if len(args.blank) != 1:
        raise UsageError(f"--blank must be one character, got {args.blank!r}")
    if args.spacing != "default":
        raise UsageError("--spacing is for points and image runs; drop it for a text run")
    if args.sampler is not None:
        raise UsageError(f"--sampler {args.sampler} is for points and image runs; a text run samples with --order "
                         "(random: ancestral, or confidence): drop --sampler")
    if args.trajectory is not None and args.trajectory.suffix.lower() not in TRAJECTORIES:
        raise UsageError(f"--trajectory for a text run must end in .txt, .png or .gif, got "
                         f"{str(args.trajectory)!r}")
    out = args.out or args.run / "samples.jsonl"
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out for a text run must end in .jsonl or .txt, got {str(out)!r}")
    n = 16 if args.n is None else args.n
    if n < 1:
        raise UsageError(f"-n must be >= 1, got {n}")
    vocab = Vocabulary.from_dict(info["vocab"])
    causal = "bos_id" in info
    if causal:
        _check_causal(args)
    z = template(args, vocab, int(info["net_config"]["max_len"]), int(info["data"]["shape"][0]))
    steps = len(z) if args.steps is None else args.steps
    refuse_overwrite(planned("text", out, n, None, args.trajectory), args.overwrite)
    device = resolve_device(args.device)
    model, _, _ = load_model(args.run, ema=args.ema, device=device)
    if causal:
        start = int((z != vocab.mask_id).sum())
        with torch.no_grad():
            x = generate_causal(model, z, n, start, seed=args.seed, batch_size=args.batch_size, device=device)
        settings = {"seed": args.seed, "order": "left-to-right", "length": len(z)}
        print(write_texts(out, [vocab.decode(row) for row in x], settings))
        return 0
    snapshots: list[tuple[float, Tensor]] | None = None if args.trajectory is None else []
    with torch.no_grad():
        x = generate_texts(model, z, n, steps=steps, seed=args.seed, batch_size=args.batch_size,
                           order=args.order, device=device, snapshots=snapshots)
    settings = {"seed": args.seed, "steps": steps, "order": args.order, "length": len(z)}
    print(write_texts(out, [vocab.decode(row) for row in x], settings))
    if snapshots is not None:
        print(write_trajectory(args.trajectory, snapshots, vocab, args.blank))
    return 0
