"""TrainConfig: every key of a training run, its JSON/TOML form, and the checks of the loop's own keys.

The keys of what is learned (schedule, parameterization, weighting, ...) are checked by the run's objective
(`rediffuse.objectives`); `rediffuse.objectives.validate` checks both.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from rediffuse.core import losses
from rediffuse.core import schedules
from rediffuse.audio.codec import REPRESENTATIONS
from rediffuse.data.text import TOKEN_KINDS
from rediffuse.distributed import DEVICE_HELP, pick_device
from rediffuse.core.denoisers import PARAMETERIZATIONS
from rediffuse.errors import ConfigError
from rediffuse.tensorboard_log import LOGS, require_tensorboard

LR_SCHEDULES = ("constant", "cosine")


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text (shown by the CLI)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON/TOML keys are these field names)."""

    data: str = _opt("moons", "data: a 2-D set (moons, swissroll, 8gaussians, checkerboard, spirals), another "
                               "analytic preset, a .npy/.csv of points, or images (digits, mnist:PATH, folder:PATH, "
                               ".npz), or text (text:PATH, text:PATH@train), or audio (audio:PATH, fsdd:PATH, "
                               "either with @train or @heldout)")
    out: str = _opt("runs/run", "run folder for checkpoints, logs and pictures")
    objective: str = _opt("gaussian", "what is learned: gaussian (denoising diffusion), masked (masked "
                                        "token diffusion of text), autoregressive (the causal text baseline) or "
                                        "consistency (few-step tuning of a Gaussian run: `rediffuse distill`)")
    num_points: int = _opt(100_000, "training-set size drawn from an analytic points preset")
    image_size: int | None = _opt(None, "resize images to this size (default: as stored)")
    hflip: bool = _opt(False, "images: flip a random half of each batch left-right (data augmentation)")
    max_image_side: int = _opt(1024, "refuse images with a longer side when --image-size is not given")
    clip_length: int = _opt(8192, "audio data: samples per clip (longer clips are centre-cropped, shorter "
                                  "zero-padded)")
    sample_rate: int = _opt(8000, "audio data: the sample rate in Hz (other files are resampled, polyphase)")
    audio_representation: str = _opt("waveform", "audio data: what the model learns, waveform (a 1-D UNet) or "
                                                 "mel (log-mel images for a 2-D UNet, decoded by Griffin-Lim)")
    tokens: str = _opt("char", "text data: char (the training text's characters) or bytes (UTF-8 bytes)")
    block_length: int = _opt(256, "text data: the length of the training windows, in tokens")
    mask_schedule: str = _opt("log-linear", "masked objective: the masking schedule, log-linear or cosine")
    teacher: str | None = _opt(None, "consistency objective: the teacher checkpoint whose EMA weights start the "
                                     "student (`rediffuse distill` sets it)")
    ct_method: str = _opt("ect", "consistency tuning: ect (the student's own pairs, Geng et al. 2024) or cd (the "
                                 "pair's second point from one Euler step of the teacher's ODE, Song et al. 2023)")
    teacher_guidance: float = _opt(1.0, "consistency tuning, method cd: the teacher's classifier-free guidance "
                                        "scale, baked into the student (sample it unguided)")
    ct_stage_steps: int = _opt(100, "consistency tuning: steps per stage of ECT's shrinking gap (it halves each "
                                    "stage)")
    ct_stages: int = _opt(8, "consistency tuning: the number of gap stages (the last one lasts to the end)")
    ct_p_mean: float = _opt(-1.1, "consistency tuning: mean of ln(t) for the noise levels (ECT's; in units of "
                                  "sigma_data / 0.5)")
    ct_p_std: float = _opt(2.0, "consistency tuning: standard deviation of ln(t) (ECT's)")
    ct_huber_c: float | None = _opt(None, "consistency tuning: the pseudo-Huber constant (default: iCT's "
                                          "0.00054 sqrt(dim) in units of sigma_data / 0.5)")
    mid_sigma: float | None = _opt(None, "consistency model: the middle noise level of 2-step sampling (default: "
                                         "0.821 in units of sigma_data / 0.5, as in iCT and ECT)")
    net: str = _opt("auto", "network: mlp, unet, unet1d, transformer, or auto (mlp for points, unet for "
                            "images, unet1d for audio, transformer for text)")
    net_kwargs: dict = _opt({}, "extra network arguments, e.g. {hidden = 512} (TOML table or JSON)")
    schedule: str = _opt("edm", f"noise schedule: {', '.join(schedules.SCHEDULES)}")
    schedule_kwargs: dict = _opt({}, "extra schedule arguments (TOML table or JSON)")
    parameterization: str = _opt("edm", f"network target: {', '.join(PARAMETERIZATIONS)}")
    weighting: str = _opt("edm", f"loss weighting: {', '.join(losses.WEIGHTINGS)}")
    min_snr_gamma: float = _opt(5.0, "gamma of the min-snr weighting")
    sigma_data: float | str = _opt("auto", "data standard deviation for EDM, or 'auto' (measured once)")
    conditional: bool = _opt(False, "train a class-conditional model (the data must have labels)")
    label_dropout: float = _opt(0.1, "probability of the null label during training (classifier-free guidance)")
    batch_size: int = _opt(512, "training batch size")
    steps: int = _opt(2000, "total optimizer steps of the run")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    lr_schedule: str = _opt("constant", "after warmup: constant or cosine (decay to 0 at the last step)")
    warmup_steps: int = _opt(100, "linear learning-rate warmup steps")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    grad_clip: float = _opt(1.0, "clip the gradient norm to this (0 = off)")
    ema_decay: float = _opt(0.999, "EMA decay")
    ema_warmup: bool = _opt(True, "EMA decay warmup min(decay, (1+step)/(10+step))")
    seed: int = _opt(0, "seed of the data set, initial weights, data order and noise")
    device: str = _opt("auto", f"device: {DEVICE_HELP}")
    compile: bool = _opt(False, "compile the training model with torch.compile (needs a C++ compiler on CPU)")
    precision: str = _opt("auto", "auto (bf16 autocast on CUDA, fp32 elsewhere), fp32, bf16 (autocast) or fp16 "
                                  "(CUDA only: autocast with a dynamic loss scale)")
    checkpoint_every: int = _opt(1000, "save a checkpoint every N steps (and at the end)")
    checkpoint_minutes: float | None = _opt(None, "also save a checkpoint every M minutes of training time")
    keep_last: int = _opt(3, "keep the newest K checkpoints")
    log_every: int = _opt(100, "log the mean loss every N steps")
    log: str = _opt("jsonl", "jsonl (log.jsonl, always written) or tensorboard (also scalars in OUT/tensorboard; "
                             "needs the tensorboard package)")
    sample_every: int = _opt(0, "write EMA samples every N steps (0 = off): an image grid, or a .txt of "
                                      "texts for text runs")
    minutes: float | None = _opt(None, "time budget: stop cleanly with a checkpoint after M minutes of training "
                                       "in all (a resumed run counts its earlier time); a cosine learning rate "
                                       "then decays over the budget or the steps, whichever ends first")
    max_bad_steps: int = _opt(20, "stop after this many steps in a row with a non-finite loss or gradient "
                                  "(each such step is skipped)")
    progress: bool = _opt(True, "show a progress bar on a terminal")

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
IDENTITY = ("data", "objective", "num_points", "image_size", "clip_length", "sample_rate", "audio_representation", "tokens", "block_length", "mask_schedule", "net",
            "net_kwargs", "schedule", "schedule_kwargs", "parameterization", "sigma_data", "conditional", "seed",
            "batch_size")


def need(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ok."""
    if not ok:
        raise ConfigError(message)


def _numbers(config: TrainConfig) -> list[tuple[str, float]]:
    """(name, value) of every float field of a config and of the numbers in its net and schedule tables."""
    found = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]
    for table in ("net_kwargs", "schedule_kwargs"):
        values = getattr(config, table)
        found += [(f"{table}.{k}", v) for k, v in (values.items() if isinstance(values, dict) else ())]
    return [(k, float(v)) for k, v in found if isinstance(v, float)]


def check(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid value among the loop's keys (not the objective's)."""
    need(config.lr_schedule in LR_SCHEDULES,
         f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    need(config.audio_representation in REPRESENTATIONS, f"unknown audio_representation "
         f"{config.audio_representation!r}; choose one of {', '.join(REPRESENTATIONS)}")
    for name in ("batch_size", "steps", "num_points", "block_length", "checkpoint_every", "keep_last", "log_every", "max_bad_steps",
                 "clip_length", "sample_rate", "max_image_side"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 1,
             f"{name} must be a positive integer, got {getattr(config, name)!r}")
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
    need(config.tokens in TOKEN_KINDS, f"unknown tokens {config.tokens!r}; choose one of {', '.join(TOKEN_KINDS)}")
    need(config.image_size is None or config.image_size >= 1, "image_size must be a positive integer")
    need(isinstance(config.net_kwargs, dict), "net_kwargs must be a table (dict)")
    need(config.log in LOGS, f"unknown log {config.log!r}; choose one of {', '.join(LOGS)}")
    if config.log == "tensorboard":
        require_tensorboard()
    device = resolve_device(config.device)
    need(config.precision in PRECISIONS,
         f"unknown precision {config.precision!r}; choose one of {', '.join(PRECISIONS)}")
    need(config.precision != "fp16" or device.type == "cuda",
         f"precision fp16 needs a CUDA device (it trains with a dynamic loss scale there), and this run's device "
         f"is {device.type}; use --precision fp32 or bf16")


def resolve_device(name: str) -> torch.device:
    """A torch device from its name ('auto': CUDA, then MPS, then CPU); ConfigError if unknown or unavailable."""
    try:
        return pick_device(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
