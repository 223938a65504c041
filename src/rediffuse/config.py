"""TrainConfig: every key of a training run in one flat namespace (one flag each, one TOML table), its JSON form,
and the checks of the loop's own keys.

The keys of what is learned (schedule, parameterization, ...; `objectives.gaussian.GaussianKeys` and the
others) and of each kind of data (clip_length, tokens, ...; `modalities.audio.AudioKeys` and the others) are
declared beside the code that reads them, with their help texts, and checked there (`Objective.check`,
`Modality.check_keys`); TrainConfig inherits them all. `rediffuse.objectives.validate` checks everything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any

import torch

from rediffuse import modalities, samplers
from rediffuse.core import schedules
from rediffuse.distributed import DEVICE_HELP, pick_device
from rediffuse.errors import ConfigError
from rediffuse.keys import need, need_positive_ints, opt
from rediffuse.modalities.audio import AudioKeys
from rediffuse.modalities.images import ImageKeys
from rediffuse.modalities.points import PointKeys
from rediffuse.modalities.table import TableKeys
from rediffuse.modalities.text import TextKeys
from rediffuse.objectives.consistency import ConsistencyKeys
from rediffuse.objectives.gaussian import GaussianKeys
from rediffuse.objectives.block import BlockKeys
from rediffuse.objectives.masked import MaskedKeys
from rediffuse.presets import RECOMMENDED
from rediffuse.tensorboard_log import LOGS, require_tensorboard

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig(ConsistencyKeys, BlockKeys, MaskedKeys, GaussianKeys, TableKeys, TextKeys, AudioKeys, ImageKeys,
                  PointKeys):
    """Everything that defines a training run (JSON/TOML keys are these field names): the loop's keys here, and
    those of the objectives and kinds of data, inherited from their key groups."""

    data: str = opt("moons", "data: a 2-D set (moons, swissroll, 8gaussians, checkerboard, spirals), another "
                               "analytic preset, a .npy/.csv of points, or images (digits, mnist:PATH, folder:PATH, "
                               ".npz), or text (text:PATH, text:PATH@train), or audio (audio:PATH, fsdd:PATH, "
                               "either with @train or @heldout)")
    out: str = opt("runs/run", "run folder for checkpoints, logs and pictures")
    objective: str = opt("gaussian", "what is learned: gaussian (denoising diffusion), masked (masked "
                                        "token diffusion of text), block (block diffusion of text), "
                                        "autoregressive (the causal text baseline), table (rows of a table) or "
                                        "consistency (few-step tuning of a Gaussian run: `rediffuse distill`)")
    net: str = opt("auto", "network: mlp, unet, unet1d, transformer, or auto (mlp for points, unet for "
                            "images, unet1d for audio, transformer for text)")
    net_kwargs: dict = opt({}, "extra network arguments, e.g. {hidden = 512} (TOML table or JSON)")
    conditional: bool = opt(False, "train a class-conditional model (the data must have labels)")
    batch_size: int = opt(512, "training batch size")
    steps: int = opt(2000, "total optimizer steps of the run")
    lr: float = opt(1e-3, "peak learning rate (AdamW)")
    lr_schedule: str = opt("constant", "after warmup: constant or cosine (decay to 0 at the last step)")
    warmup_steps: int = opt(100, "linear learning-rate warmup steps")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    grad_clip: float = opt(1.0, "clip the gradient norm to this (0 = off)")
    ema_decay: float = opt(0.999, "EMA decay")
    ema_warmup: bool = opt(True, "EMA decay warmup min(decay, (1+step)/(10+step))")
    seed: int = opt(0, "seed of the data set, initial weights, data order and noise")
    device: str = opt("auto", f"device: {DEVICE_HELP}")
    compile: bool = opt(False, "compile the training model with torch.compile (needs a C++ compiler on CPU)")
    precision: str = opt("auto", "auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16 (autocast) or fp16 "
                                  "(CUDA only: autocast with a dynamic loss scale)")
    checkpoint_every: int = opt(1000, "save a checkpoint every N steps (and at the end)")
    checkpoint_minutes: float | None = opt(None, "also save a checkpoint every M minutes of training time")
    keep_last: int = opt(3, "keep the newest K checkpoints")
    log_every: int = opt(100, "log the mean loss every N steps")
    log: str = opt("jsonl", "jsonl (log.jsonl, always written) or tensorboard (also scalars in OUT/tensorboard; "
                             "needs the tensorboard package)")
    sample_every: int = opt(0, "write EMA samples every N steps (0 = off): an image grid, or a .txt of "
                                      "texts for text runs")
    minutes: float | None = opt(None, "time budget: stop cleanly with a checkpoint after M minutes of training "
                                       "in all (a resumed run counts its earlier time); a cosine learning rate "
                                       "then decays over the budget or the steps, whichever ends first")
    max_bad_steps: int = opt(20, "stop after this many steps in a row with a non-finite loss or gradient "
                                  "(each such step is skipped)")
    progress: bool = opt(True, "show a progress bar on a terminal")
    sampling: dict = opt({}, "the run's recommended sampling, e.g. {sampler = \"heun\", steps = 18, guidance = 2}: "
                             "what `rediffuse sample`, eval and serve use where their flags are not given (a "
                             "preset fills it with what its benchmark measured)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from a dict of field values; an unknown key is a ConfigError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in names]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), sorted(names), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(f"unknown config key {_short(unknown[0])}; {hint}every key is a flag of "
                              "`rediffuse train --help` (--batch-size for batch_size)")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if not _type_ok(types[key], value):
                raise ConfigError(f"config key {key!r} must be {types[key]}, got {_short(value)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value among the loop's and the data's keys."""
        check(self)


KEY_GROUPS = (GaussianKeys, ConsistencyKeys, MaskedKeys, BlockKeys, PointKeys, ImageKeys, AudioKeys, TextKeys,
              TableKeys)


def key_groups() -> list[tuple[str, list[dataclasses.Field]]]:
    """(title, fields) of the run's own keys, then of each objective's and each kind of data's key group."""
    grouped = [(g.__doc__.strip().rstrip("."), list(dataclasses.fields(g))) for g in KEY_GROUPS]
    taken = {f.name for _, fields in grouped for f in fields}
    own = [f for f in dataclasses.fields(TrainConfig) if f.name not in taken]
    return [("The keys of every run", own), *grouped]


_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                       "dict": (dict,)}


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters (for one-line messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _type_ok(annotation: str, value: Any) -> bool:
    """Whether value fits a field annotation such as 'int', 'float | None' or 'float | str'."""
    for name in annotation.split(" | "):
        if name == "None":
            if value is None:
                return True
        elif isinstance(value, _TYPES[name]) and (name == "bool" or not isinstance(value, bool)):
            return True
    return False


PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Fields that define the model and its data: a resumed run must keep them.
IDENTITY = ("data", "objective", "num_points", "image_size", "clip_length", "sample_rate", "audio_representation",
            "tokens", "block_length", "mask_schedule", "columns", "target", "net", "net_kwargs", "schedule",
            "schedule_kwargs", "parameterization", "sigma_data", "conditional", "seed", "batch_size")


def _numbers(config: TrainConfig) -> list[tuple[str, float]]:
    """(name, value) of every float field of a config and of the numbers in its net and schedule tables."""
    found = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]
    for table in ("net_kwargs", "schedule_kwargs"):
        values = getattr(config, table)
        found += [(f"{table}.{k}", v) for k, v in (values.items() if isinstance(values, dict) else ())]
    return [(k, float(v)) for k, v in found if isinstance(v, float)]


def check(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid value among the loop's keys and the data's (not the
    objective's)."""
    need(config.lr_schedule in LR_SCHEDULES,
         f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    for modality in modalities.MODALITIES.values():
        modality.check_keys(config)
    need_positive_ints(config, ("batch_size", "steps", "checkpoint_every", "keep_last", "log_every", "max_bad_steps"))
    for name in ("warmup_steps", "sample_every"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 0,
             f"{name} must be a non-negative integer, got {getattr(config, name)!r}")
    for name in ("lr", "weight_decay", "grad_clip", "ema_decay"):
        need(math.isfinite(getattr(config, name)), f"{name} must be a finite number, got {getattr(config, name)}")
    for name, value in _numbers(config):
        need(math.isfinite(value), f"{name} must be a finite number, got {value}")
    need(config.lr > 0, f"lr must be positive, got {config.lr}")
    need(config.weight_decay >= 0 and config.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")
    need(0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}")
    for name in ("minutes", "checkpoint_minutes"):
        value = getattr(config, name)
        need(value is None or 0 < value < math.inf, f"{name} must be a positive number, got {value}")
    need(isinstance(config.net_kwargs, dict), "net_kwargs must be a table (dict)")
    check_sampling(config.sampling)
    need(config.log in LOGS, f"unknown log {config.log!r}; choose one of {', '.join(LOGS)}")
    if config.log == "tensorboard":
        require_tensorboard()
    device = resolve_device(config.device)
    need(config.precision in PRECISIONS,
         f"unknown precision {config.precision!r}; choose one of {', '.join(PRECISIONS)}")
    need(config.precision != "fp16" or device.type == "cuda",
         f"precision fp16 needs a CUDA device (it trains with a dynamic loss scale there), and this run's device "
         f"is {device.type}; use --precision fp32 or bf16")


def check_sampling(values: Any) -> None:
    """ConfigError naming the first bad entry of a recommended sampling table."""
    need(isinstance(values, dict), "sampling must be a table (dict)")
    bad = sorted(set(values) - set(RECOMMENDED))
    need(not bad, f"unknown sampling key {bad[0] if bad else ''!r}; the keys are {', '.join(RECOMMENDED)}")
    sampler, steps = values.get("sampler", "heun"), values.get("steps", 1)
    need(sampler in samplers.SAMPLERS, f"unknown sampling.sampler {sampler!r}; choose one of "
                                       f"{', '.join(sorted(samplers.SAMPLERS))}")
    need(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1,
         f"sampling.steps must be an integer >= 1, got {steps!r}")
    spacing = values.get("spacing", "default")
    need(spacing in (*schedules.SPACINGS, "tuned"), f"unknown sampling.spacing {spacing!r}; choose one of "
                                                   f"{', '.join((*schedules.SPACINGS, 'tuned'))}")
    guidance = values.get("guidance", 1.0)
    need(isinstance(guidance, (int, float)) and not isinstance(guidance, bool) and 0 <= guidance < math.inf,
         f"sampling.guidance must be a finite number >= 0, got {guidance!r}")
    eta = values.get("eta", 0.0)
    need(isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta <= 1,
         f"sampling.eta must be a number between 0 and 1, got {eta!r}")
    need("eta" not in values or sampler in samplers.TAKES_ETA,
         f"sampling.eta needs a sampler that takes it ({', '.join(samplers.TAKES_ETA)}), not {sampler!r}")


def resolve_device(name: str) -> torch.device:
    """A torch device from its name ('auto': CUDA, then MPS, then CPU); ConfigError if unknown or unavailable."""
    try:
        return pick_device(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
