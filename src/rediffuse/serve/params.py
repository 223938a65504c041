"""A generation request of the page, parsed and bounded: typed values or a one-line BadRequest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import torch

from rediffuse.samplers import SAMPLERS

KEYS = ("run", "n", "steps", "sampler", "guidance", "seed", "class", "spacing", "order", "prompt", "length",
        "infill")
MAX_SEED = 2**31 - 1
MAX_GUIDANCE = 20.0


class BadRequest(ValueError):
    """A request the server refuses (400), with a message naming the problem."""


@dataclass(frozen=True)
class Params:
    """One generation: which run, how many samples, the sampler and its steps, guidance, seed, class, and the
    text options."""

    run: int
    n: int
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None  # None: the run's recommended guidance, else 1
    seed: int = 0
    cls: int | None = None
    spacing: str = "default"
    order: str = "random"
    prompt: str | None = None
    length: int | None = None
    infill: str | None = None

    def text(self) -> dict[str, Any]:
        """The text options that were given (a Gaussian run is refused any)."""
        given = {"order": self.order if self.order != "random" else None, "prompt": self.prompt,
                 "length": self.length, "infill": self.infill}
        return {k: v for k, v in given.items() if v is not None}

    def expected_steps(self, run: Any) -> int:
        """About how many steps the draw reports (to thin the frames)."""
        spec = run.spec
        if run.modality.gaussian:
            return run.choice(self.sampler, self.steps).steps
        length = len(self.infill) if self.infill else self.length or int(spec.data.shape[0])
        if spec.block:
            return (self.steps or spec.block) * -(-length // spec.block)
        return length if spec.bos_id is not None else self.steps or length


def _one(values: dict[str, list[str]], key: str) -> str | None:
    """The single value of key, or None."""
    found = values.get(key)
    if found is None:
        return None
    if len(found) != 1:
        raise BadRequest(f"{key} is given {len(found)} times; give it once")
    return found[0]


def _number(values: dict[str, list[str]], key: str, low: float, high: float, default: Any = None,
            kind: type = int) -> Any:
    """A whole number (kind int) or a number (float) in [low, high], or the default when absent."""
    raw = _one(values, key)
    if raw is None or raw == "":
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{key} must be {what} in {low:g}..{high:g}, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{key} must be in {low:g}..{high:g}, got {value:g}")
    return value


def _query(query: str, keys: tuple[str, ...], runs: list[Any]) -> tuple[dict[str, list[str]], int]:
    """The query's values (known keys only) and its run index; BadRequest naming the first problem."""
    try:
        values = parse_qs(query, keep_blank_values=True, max_num_fields=len(keys) * 2, errors="strict")
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed query: {' '.join(str(err).split())[:80]}") from None
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r}; this request takes {', '.join(keys)}")
    index = _number(values, "run", 0, len(runs) - 1)
    if index is None:
        raise BadRequest(f"give run=0..{len(runs) - 1} (GET /api/runs lists them)")
    return values, index


def allowed_samplers(run: Any) -> list[str]:
    """The samplers a run draws with: a few-step student its consistency sampler, a Gaussian run every other
    one, a token run none (it takes an order)."""
    if not run.modality.gaussian:
        return []
    return ["consistency"] if run.spec.consistency else [s for s in SAMPLERS if s != "consistency"]


def parse_params(query: str, runs: list[Any], limits: Any) -> Params:
    """The Params of a query string; BadRequest naming the first problem."""
    values, run_index = _query(query, KEYS, runs)
    run = runs[run_index]
    points = run.modality.name == "points"
    n = _number(values, "n", 1, limits.points if points else limits.samples, 1)
    steps = _number(values, "steps", 1, limits.steps)
    classes = run.num_classes
    cls = _number(values, "class", 0, (classes or 1) - 1) if classes else None
    if not classes and _one(values, "class") not in (None, ""):
        raise BadRequest(f"run {run_index} has no classes; drop class")
    guidance = _number(values, "guidance", 0.0, MAX_GUIDANCE, None, float)
    prompt, infill = _one(values, "prompt") or None, _one(values, "infill") or None
    for name, given in (("prompt", prompt), ("infill template", infill)):
        if given is not None and len(given) > limits.prompt:
            raise BadRequest(f"the {name} has {len(given)} characters; at most {limits.prompt}")
    spacing = _one(values, "spacing") or "default"
    if spacing not in ("default", "tuned"):
        raise BadRequest(f"spacing must be default or tuned, got {spacing[:40]!r}")
    sampler = _one(values, "sampler") or None
    allowed = allowed_samplers(run)
    if sampler is not None and sampler not in allowed:
        raise BadRequest(f"run {run_index} samples with {', '.join(allowed) or 'its own sampler (drop sampler)'}; "
                         f"got sampler {sampler[:40]!r}")
    return Params(run=run_index, n=n, steps=steps, sampler=sampler, guidance=guidance,
                  seed=_number(values, "seed", 0, MAX_SEED, 0), cls=cls, spacing=spacing,
                  order=_one(values, "order") or "random", prompt=prompt,
                  length=_number(values, "length", 1, limits.length), infill=infill)


EDIT_KEYS = ("run", "sample", "mask", "region", "method", "strength", "steps", "seed", "class", "guidance")
EDIT_METHODS = ("smc", "replace", "reconstruct", "repaint", "sdedit")


@dataclass(frozen=True)
class EditParams:
    """One edit of an image or clip of the run's latest generation: which sample, what to redraw (an image's mask:
    hex, one bit per pixel, row by row, most significant bit first, set bits redrawn; a clip's region: samples
    [start, end)), the method and its strength (sdedit)."""

    run: int
    sample: int
    mask: str
    height: int
    width: int
    method: str = "smc"
    strength: float = 0.5
    steps: int | None = None
    seed: int = 0
    cls: int | None = None
    guidance: float = 1.0
    region: tuple[int, int] | None = None

    def pixels(self, shape: Any) -> torch.Tensor:
        """What to redraw as a bool tensor of the batch's shape ([1, C, H, W] images, [1, 1, L] clips)."""
        if self.region is not None:
            missing = torch.zeros(tuple(shape), dtype=torch.bool)
            missing[..., self.region[0]:self.region[1]] = True
            return missing
        bits = bin(int(self.mask, 16))[2:].zfill(len(self.mask) * 4)[: self.height * self.width]
        flat = torch.tensor([b == "1" for b in bits], dtype=torch.bool)
        return flat.reshape(1, 1, self.height, self.width).expand(*shape).clone()

    def expected_steps(self, run: Any) -> int:
        """About how many steps the edit reports."""
        return self.steps or 18


def parse_edit(query: str, runs: list[Any], limits: Any) -> EditParams:
    """The EditParams of a query string; BadRequest naming the first problem."""
    values, index = _query(query, EDIT_KEYS, runs)
    run = runs[index]
    if run.modality.name not in ("images", "audio"):
        raise BadRequest(f"the page edits image and audio runs; run {index} is {run.modality.a_run}")
    method = _one(values, "method") or "smc"
    if method not in EDIT_METHODS:
        raise BadRequest(f"method must be one of {', '.join(EDIT_METHODS)}, got {method[:40]!r}")
    mask, region, height, width = (_one(values, "mask") or "").lower(), None, 0, 0
    if run.modality.name == "audio":
        region = None if method == "sdedit" else _region(_one(values, "region") or "", run.spec)
    else:
        height, width = (int(v) for v in run.spec.data.shape[-2:])
        digits = -(-height * width // 4)
        if method != "sdedit" and (len(mask) != digits or any(c not in "0123456789abcdef" for c in mask)):
            raise BadRequest(f"mask must be {digits} hex digits (one bit per pixel of {height} x {width}), got "
                             f"{len(mask)} characters")
    classes = run.num_classes
    return EditParams(run=index, sample=_number(values, "sample", 0, limits.samples - 1, 0), mask=mask, height=height,
                      width=width, method=method, strength=_number(values, "strength", 0.01, 1.0, 0.5, float),
                      steps=_number(values, "steps", 1, limits.steps), seed=_number(values, "seed", 0, MAX_SEED, 0),
                      cls=_number(values, "class", 0, classes - 1) if classes else None,
                      guidance=_number(values, "guidance", 0.0, MAX_GUIDANCE, 1.0, float), region=region)


def _region(text: str, spec: Any) -> tuple[int, int]:
    """The samples [start, end) of `region=A:B` seconds of an audio run's clips."""
    rate = int(spec.data.rate)
    length = int(spec.data.codec["length"]) if spec.data.codec else int(spec.data.shape[-1])
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise BadRequest(f"region takes seconds as A:B, e.g. 0.30:0.55, got {text[:40]!r}") from None
    if not 0 <= start < end <= length / rate:
        raise BadRequest(f"region {text[:40]} lies outside the {length / rate:.3f} s clips; give 0 <= A < B <= "
                         f"{length / rate:.3f}")
    return round(start * rate), round(end * rate)
