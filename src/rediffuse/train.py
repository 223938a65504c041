"""The training loop for points and images: AdamW, EMA, checkpoints, exact resume, logs and pictures.

Every random choice of step k (the batch, the noise levels, the noise, the label dropout, and the global RNG
that dropout layers use) is a function of (seed, k), so on CPU N steps plus a resumed N steps equal 2N
uninterrupted steps bit for bit.

Under `torchrun --nproc_per_node=P` the P processes train one model with DistributedDataParallel: every rank
draws the same global batch and its noise from the per-step generators and keeps its 1/P slice, so P
processes compute what one process computes (up to float summation order); rank 0 logs and checkpoints.

A step whose loss or gradient is not finite is skipped on the device (no host sync) and counted; after
`max_bad_steps` of them in a row the run stops with `NonFiniteError`, its last checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import signal
import sys
import threading
import time
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rediffuse import checkpoint, losses, schedules, viz
from rediffuse.samplers import generation as sampling
from rediffuse.distributed import SINGLE, World, session, wrap_ddp
from rediffuse.data import toy2d
from rediffuse.denoisers import PARAMETERIZATIONS, Denoiser, wrap
from rediffuse.ema import EMA
from rediffuse.errors import ConfigError, NonFiniteError
from rediffuse.io import atomic_write
from rediffuse.nets.mlp import MLP
from rediffuse.nets.unet2d import UNet2D

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet2D}
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
                               ".npz)")
    out: str = _opt("runs/run", "run folder for checkpoints, logs and pictures")
    num_points: int = _opt(100_000, "training-set size drawn from an analytic points preset")
    image_size: int | None = _opt(None, "resize images to this size (default: as stored)")
    net: str = _opt("auto", "network: mlp, unet, or auto (mlp for points, unet for images)")
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
    device: str = _opt("cpu", "device: cpu, cuda, cuda:N")
    checkpoint_every: int = _opt(1000, "save a checkpoint every N steps (and at the end)")
    checkpoint_minutes: float | None = _opt(None, "also save a checkpoint every M minutes of training time")
    keep_last: int = _opt(3, "keep the newest K checkpoints")
    log_every: int = _opt(100, "log the mean loss every N steps")
    sample_every: int = _opt(0, "image runs: write a grid of EMA samples every N steps (0 = off)")
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
            raise ConfigError(f"unknown config key {_short(unknown[0])}; valid keys: {', '.join(sorted(names))}")
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


# Fields that define the model and its data: a resumed run must keep them.
IDENTITY = ("data", "num_points", "image_size", "net", "net_kwargs", "schedule", "schedule_kwargs",
            "parameterization", "sigma_data", "conditional", "seed", "batch_size")


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid value."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(config.net in ("auto", *NETS), f"unknown net {config.net!r}; choose auto, {', '.join(NETS)}")
    need(config.schedule in schedules.SCHEDULES,
         f"unknown schedule {config.schedule!r}; choose one of {', '.join(schedules.SCHEDULES)}")
    need(config.parameterization in PARAMETERIZATIONS,
         f"unknown parameterization {config.parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    need(config.weighting in losses.WEIGHTINGS,
         f"unknown weighting {config.weighting!r}; choose one of {', '.join(losses.WEIGHTINGS)}")
    need(config.lr_schedule in LR_SCHEDULES,
         f"unknown lr_schedule {config.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    need(config.sigma_data == "auto" or (isinstance(config.sigma_data, (int, float))
                                         and 0 < config.sigma_data < math.inf),
         f"sigma_data must be 'auto' or a positive number, got {config.sigma_data!r}")
    for name in ("batch_size", "steps", "num_points", "checkpoint_every", "keep_last", "log_every", "max_bad_steps"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 1,
             f"{name} must be a positive integer, got {getattr(config, name)!r}")
    for name in ("warmup_steps", "sample_every"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 0,
             f"{name} must be a non-negative integer, got {getattr(config, name)!r}")
    for name in ("lr", "weight_decay", "grad_clip", "min_snr_gamma", "label_dropout", "ema_decay"):
        need(math.isfinite(getattr(config, name)), f"{name} must be a finite number, got {getattr(config, name)}")
    need(config.lr > 0, f"lr must be positive, got {config.lr}")
    need(config.min_snr_gamma > 0, f"min_snr_gamma must be positive, got {config.min_snr_gamma}")
    need(config.weight_decay >= 0 and config.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")
    need(0 <= config.label_dropout < 1, f"label_dropout must be in [0, 1), got {config.label_dropout}")
    need(0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}")
    for name in ("minutes", "checkpoint_minutes"):
        value = getattr(config, name)
        need(value is None or 0 < value < math.inf, f"{name} must be a positive number, got {value}")
    need(config.image_size is None or config.image_size >= 1, "image_size must be a positive integer")
    need(isinstance(config.net_kwargs, dict) and isinstance(config.schedule_kwargs, dict),
         "net_kwargs and schedule_kwargs must be tables (dicts)")
    resolve_device(config.device)


def resolve_device(name: str) -> torch.device:
    """A torch device from its name; ConfigError if unknown or unavailable."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError, OverflowError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    """A training set in memory: x [N, ...] (float32), optional labels [N], and its kind."""

    x: Tensor
    labels: Tensor | None
    kind: str  # "points" or "images"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1


def data_kind(spec: str) -> str:
    """'points' for analytic presets and point files, else 'images' (ConfigError for a missing data file)."""
    if Path(spec).suffix.lower() in (".npy", ".npz", ".csv") and not Path(spec).is_file():
        raise ConfigError(f"data file {spec!r} does not exist; check the --data path")
    return "points" if toy2d.is_preset(spec) or toy2d.is_point_file(spec) else "images"


# What the loaders raise for unreadable files: numpy raises EOFError for empty files and TokenError for some
# damaged .npy headers, zipfile BadZipFile for damaged .npz files.
_LOAD_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, tokenize.TokenError, KeyError, IndexError)
_DATA_HINT = "give a .npy/.csv of points [N, d] or images (digits, mnist:PATH, folder:PATH, a .npz file)"


def build_data(config: TrainConfig) -> Data:
    """Load or draw the training set named by config.data; ValueError naming the data if it is unusable."""
    try:
        data = _load_data(config)
    except ConfigError:
        raise
    except _LOAD_ERRORS as err:
        raise ValueError(_data_error(config.data, err)) from err
    if len(data.x) == 0:
        raise ValueError(f"data {config.data!r} holds no examples; {_DATA_HINT}")
    if not torch.isfinite(data.x).all():
        raise ValueError(f"data {config.data!r} holds NaN or infinite values; remove or fix those entries")
    return data


def _data_error(spec: str, err: BaseException) -> str:
    """A one-line message for a loader's exception, naming the data unless the message already does."""
    detail = " ".join(str(err).split())
    path = spec.partition(":")[2] if ":" in spec and not Path(spec).exists() else spec
    if isinstance(err, ValueError) and not isinstance(err, UnicodeDecodeError) and path in detail:
        return detail
    return f"cannot read data {spec!r} ({type(err).__name__}: {detail or 'no details'}); {_DATA_HINT}"


def _load_data(config: TrainConfig) -> Data:
    """The training set named by config.data, as the loaders return it."""
    if data_kind(config.data) == "points":
        generator = torch.Generator().manual_seed(config.seed)
        return Data(toy2d.points_dataset(config.data, config.num_points, generator), None, "points")
    from rediffuse.data.images import load_images

    base = config.data.rpartition("@")[0] if config.data.endswith(("@train", "@heldout")) else config.data
    if ":" not in base and base != "digits" and not Path(base).exists():
        raise ConfigError(f"unknown data {config.data!r}; use a points set ({', '.join(toy2d.TOY2D)}, ...), "
                          "a .npy/.csv of points, or images (digits, mnist:PATH, folder:PATH, a .npz file)")
    images = load_images(config.data, size=config.image_size)
    return Data(images.images.float().contiguous(), images.labels, "images")


def data_std(x: Tensor) -> float:
    """The standard deviation of all values of a data set (float64 arithmetic)."""
    return float(x.double().std())


# --------------------------------------------------------------------------------------------- model


def model_spec(config: TrainConfig, data: Data) -> dict[str, Any]:
    """The JSON description of the model a config trains on data (what `build_model` rebuilds)."""
    kind = config.net if config.net != "auto" else ("mlp" if data.kind == "points" else "unet")
    num_classes = data.num_classes if config.conditional else None
    if config.conditional and num_classes is None:
        raise ConfigError(f"data {config.data!r} has no labels, so it cannot train a conditional model; "
                          "drop --conditional")
    if kind == "mlp":
        if len(data.shape) != 1:
            raise ConfigError(f"net 'mlp' needs points [N, d], but the data has shape {list(data.x.shape)}; "
                              "use --net unet for images")
        net_config = {**config.net_kwargs, "dim": data.shape[0], "num_classes": num_classes}
    else:
        if len(data.shape) != 3 or data.shape[1] != data.shape[2]:
            raise ConfigError(f"net 'unet' needs square images [N, C, H, H], got shape {list(data.x.shape)}; "
                              "use --net mlp for points or --image-size for images")
        net_config = {**config.net_kwargs, "in_channels": data.shape[0], "image_size": data.shape[1],
                      "num_classes": num_classes}
    sigma_data = data_std(data.x) if config.sigma_data == "auto" else float(config.sigma_data)
    try:
        schedule_config = schedules.get(config.schedule, **config.schedule_kwargs).config()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad schedule_kwargs for {config.schedule!r}: {err}") from None
    return {"net": kind, "net_config": net_config, "schedule": schedule_config,
            "parameterization": config.parameterization, "sigma_data": sigma_data,
            "data": {"kind": data.kind, "shape": list(data.shape), "num_classes": num_classes, "spec": config.data}}


def build_net(kind: str, net_config: dict[str, Any]) -> nn.Module:
    """A network by kind ('mlp' or 'unet') from its config dict."""
    try:
        return NETS[kind].from_config(net_config)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"bad net_kwargs for {kind!r}: {' '.join(str(err).split())}") from None


def build_model(spec: dict[str, Any]) -> tuple[nn.Module, Denoiser]:
    """The raw network and its denoiser wrapper from a `model_spec` dict."""
    net = build_net(spec["net"], spec["net_config"])
    schedule = schedules.from_config(spec["schedule"])
    return net, wrap(net, spec["parameterization"], schedule, spec["sigma_data"])


# --------------------------------------------------------------------------------------- randomness


def step_seed(seed: int, step: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one step, a pure function of (seed, step, stream)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DataOrder:
    """Batch indices as a function of (seed, step): epoch e visits the data in randperm(N) seeded by (seed, e)."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device) -> None:
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, "epoch"))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g).to(self.device)
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        """The data indices of a step's batch (on the device; slices of cached permutations)."""
        start, stop = step * self.batch_size, (step + 1) * self.batch_size
        parts = []
        while start < stop:
            epoch, offset = divmod(start, self.n)
            take = min(stop - start, self.n - offset)
            parts.append(self._perm(epoch)[offset:offset + take])
            start += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class StepNoise:
    """Per-step generators for the noise levels (CPU, as the schedules draw them) and the noise (device)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self.device = seed, device
        self.cpu = torch.Generator()
        self.dev = torch.Generator(device=device)

    def draw(self, step: int, x0: Tensor, schedule: schedules.Schedule, labels: Tensor | None,
             label_dropout: float, null_label: int | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(sigma [B] float64, noise like x0, labels with dropout) for one step, all on the device."""
        self.cpu.manual_seed(step_seed(self.seed, step, "sigma"))
        self.dev.manual_seed(step_seed(self.seed, step, "noise"))
        sigma = schedule.sample_sigmas(x0.shape[0], generator=self.cpu)
        if self.device.type == "cuda":
            sigma = sigma.pin_memory()
        sigma = sigma.to(self.device, non_blocking=True)
        noise = torch.randn(x0.shape, generator=self.dev, device=self.device, dtype=x0.dtype)
        if labels is not None and null_label is not None and label_dropout > 0:
            drop = torch.rand(labels.shape, generator=self.dev, device=self.device) < label_dropout
            labels = torch.where(drop, null_label, labels)
        return sigma, noise, labels


class StepBatches:
    """Each step's global batch (data, noise levels, noise, label dropout) drawn as by one process, then this
    rank's slice: P processes together see exactly the batch one process sees."""

    def __init__(self, data: Data, config: TrainConfig, null_label: int | None, device: torch.device,
                 world: World) -> None:
        if config.batch_size % world.size:
            raise ConfigError(f"batch_size {config.batch_size} cannot be split evenly over {world.size} processes; "
                              f"use a multiple of {world.size}")
        self.x = data.x.to(device)
        self.labels = data.labels.to(device) if null_label is not None else None
        self.order = DataOrder(len(self.x), config.batch_size, config.seed, device)
        self.noise = StepNoise(config.seed, device)
        self.config, self.null_label, self.part = config, null_label, world.split(config.batch_size)

    def get(self, step: int, schedule: schedules.Schedule) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(x0, sigma, noise, cond) of this rank's slice of step's global batch."""
        idx = self.order.indices(step)
        x0 = self.x[idx]
        labels = None if self.labels is None else self.labels[idx]
        sigma, noise, cond = self.noise.draw(step, x0, schedule, labels, self.config.label_dropout, self.null_label)
        return x0[self.part], sigma[self.part], noise[self.part], None if cond is None else cond[self.part]


# ---------------------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """The live objects of a run (`denoiser` calls the network through DDP when there are several ranks)."""

    net: nn.Module
    denoiser: Denoiser
    ema: EMA
    optimizer: torch.optim.Optimizer
    spec: dict[str, Any]
    step: int = 0
    elapsed: float = 0.0


@dataclass
class TrainResult:
    """How a run ended: folder, final step, last checkpoint, why it stopped ('done', 'time', 'interrupted') and
    this session's training throughput (examples per second of wall time, checkpoints and logs included)."""

    out: Path
    step: int
    checkpoint: Path
    stopped: str
    samples_per_s: float = 0.0


def learning_rate(config: TrainConfig, step: int, elapsed: float = 0.0) -> float:
    """The learning rate at a (0-based) step after `elapsed` seconds of training: linear warmup, then constant
    or cosine decay (over the steps after warmup, or over the time budget if that ends sooner)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        if config.minutes is not None:
            progress = max(progress, elapsed / (60 * config.minutes))
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def train_step(state: TrainState, config: TrainConfig, x0: Tensor, sigma: Tensor, noise: Tensor,
               cond: Tensor | None, lr: float, world: World = SINGLE) -> tuple[Tensor, Tensor, Tensor]:
    """One optimizer step on one batch, skipped if the loss or gradient is not finite (on any rank).

    Returns the detached, on-device loss, gradient norm (before clipping) and skip flag (float 0. or 1.).
    """
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.net.train()
    with _autocast(x0.device):
        loss = losses.denoising_loss(state.denoiser, x0, sigma, noise, config.weighting, cond,
                                     state.denoiser.sigma_data, config.min_snr_gamma)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(state.net.parameters(), config.grad_clip or math.inf)
    bad = world.max_((~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float())
    step_unless(state.optimizer, bad)
    state.ema.update(state.net, state.step, skip=bad)
    state.step += 1
    return loss.detach(), grad_norm, bad


def step_unless(optimizer: torch.optim.Optimizer, bad: Tensor) -> None:
    """optimizer.step() unless bad (a float 0-d tensor) is 1: decided on the device for fused optimizers."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = bad  # the fused Adam(W) kernels skip the update, as under torch.amp.GradScaler
        optimizer.step()
    elif not bool(bad):  # other optimizers: one host sync
        optimizer.step()


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused where the device allows (so a non-finite step is skipped without a host sync)."""
    options = dict(lr=config.lr, weight_decay=config.weight_decay)
    try:
        return torch.optim.AdamW(net.parameters(), fused=True, **options)
    except RuntimeError:  # no fused kernel for this device or torch version
        return torch.optim.AdamW(net.parameters(), **options)


def new_state(config: TrainConfig, spec: dict[str, Any], device: torch.device, world: World = SINGLE
              ) -> TrainState:
    """Freshly initialised network, EMA and AdamW (weights seeded by config.seed; DDP for several ranks)."""
    torch.manual_seed(config.seed)
    net, denoiser = build_model(spec)
    denoiser.to(device)
    ema = EMA(net, config.ema_decay, config.ema_warmup)
    if world.size > 1:
        denoiser = wrap(wrap_ddp(net, device, world), denoiser.parameterization, denoiser.schedule,
                        denoiser.sigma_data)
    return TrainState(net, denoiser, ema, make_optimizer(net, config), spec)


def save_state(out: Path, state: TrainState, config: TrainConfig) -> Path:
    """A resumable checkpoint of the state (weights, EMA, optimizer, RNG states, config); refuses NaN/inf."""
    opt_tensors, opt_rest = checkpoint.flatten_optimizer(state.optimizer.state_dict())
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"model": state.spec, "train_config": config.to_dict(), "optimizer": opt_rest,
            "elapsed": state.elapsed}
    tensors = {"model": state.net.state_dict(), "ema": state.ema.state_dict(), "optimizer": opt_tensors,
               "rng": rng}
    return checkpoint.save(out, state.step, tensors, meta, keep=config.keep_last)


def restore_state(ck: checkpoint.Checkpoint | Path, state: TrainState) -> None:
    """Load a checkpoint saved by `save_state` into a freshly built state (CheckpointError if it does not fit)."""
    ck = ck if isinstance(ck, checkpoint.Checkpoint) else checkpoint.load(ck)
    for part in ("model", "ema", "optimizer", "rng"):
        if part not in ck.tensors:
            raise checkpoint.CheckpointError(f"checkpoint {str(ck.path)!r} has no {part!r} part; it cannot resume "
                                             "training (it may be a sampling-only checkpoint)")
    load_weights(state.net, ck.tensors["model"], ck.path, "model")
    load_weights(state.ema.module, ck.tensors["ema"], ck.path, "ema")
    _load_optimizer(state.optimizer, ck)
    try:
        torch.set_rng_state(ck.tensors["rng"]["cpu"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {str(ck.path)!r} has an unusable RNG state ({err})") from None
    cuda_states = [ck.tensors["rng"][k] for k in sorted(ck.tensors["rng"]) if k.startswith("cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    state.step, state.elapsed = ck.step, float(ck.meta.get("elapsed", 0.0))


def load_weights(module: nn.Module, tensors: dict[str, Tensor], path: Path, part: str) -> None:
    """module.load_state_dict(tensors) after checking names and shapes (CheckpointError naming a mismatch)."""
    expected = module.state_dict()
    problem = _state_mismatch({k: tuple(v.shape) for k, v in expected.items()},
                              {k: tuple(v.shape) for k, v in tensors.items()})
    if problem:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r}: {part}.safetensors does not fit the model "
                                         f"({problem}); the checkpoint is corrupt or belongs to another model")
    module.load_state_dict(tensors)


def _state_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    """The first difference between two {name: shape} maps, in words, or None if they agree."""
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
    if extra:
        return f"{len(extra)} unexpected tensor(s), e.g. {extra[0]!r}"
    for name, shape in expected.items():
        if found[name] != shape:
            return f"{name!r} has shape {list(found[name])}, the model expects {list(shape)}"
    return None


def _load_optimizer(optimizer: torch.optim.Optimizer, ck: checkpoint.Checkpoint) -> None:
    """Restore the optimizer from a checkpoint, checking its moments against the parameters' shapes."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        state_dict = checkpoint.unflatten_optimizer(ck.tensors["optimizer"], ck.meta["optimizer"])
        for index, entry in state_dict["state"].items():
            for name, value in entry.items():
                if isinstance(value, Tensor) and value.numel() > 1 and value.shape != params[index].shape:
                    raise ValueError(f"{name} of parameter {index} has shape {list(value.shape)}, "
                                     f"the parameter {list(params[index].shape)}")
        optimizer.load_state_dict(state_dict)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {str(ck.path)!r}: optimizer state does not fit the model "
                                         f"({' '.join(str(err).split())})") from None


def saved_config(run_dir: str | Path) -> TrainConfig | None:
    """The training config stored in a run's newest complete checkpoint, or None if there is none."""
    path = checkpoint.latest(run_dir)
    return None if path is None else _train_config_of(path, checkpoint.read_manifest(path)["meta"])


def _train_config_of(path: Path, meta: dict[str, Any]) -> TrainConfig:
    """The TrainConfig stored in a checkpoint's metadata (CheckpointError if absent or invalid)."""
    try:
        return TrainConfig.from_dict(meta["train_config"])
    except (KeyError, TypeError, ConfigError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} has no valid training config ({err}); "
                                         "it was not written by `rediffuse train` or is corrupt") from None


def _model_of(path: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], nn.Module, Denoiser]:
    """(spec, network, denoiser) from a checkpoint's model spec (CheckpointError if it is unusable)."""
    try:
        spec = meta["model"]
        return (spec, *build_model(spec))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise checkpoint.CheckpointError(f"checkpoint {str(path)!r} has an invalid model description "
                                         f"({type(err).__name__}: {err}); it is corrupt or from another "
                                         "program") from None


def _check_resumable(config: TrainConfig, saved: TrainConfig) -> None:
    changed = [k for k in IDENTITY if getattr(config, k) != getattr(saved, k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"cannot resume with a different {k} ({getattr(saved, k)!r} in the run, "
                          f"{getattr(config, k)!r} now); keep it or start a new run with another --out")


class StopRequest:
    """Turns the first Ctrl-C or SIGTERM (a scheduler's or torchrun's shutdown) into a request checked between
    steps, so the run stops with a checkpoint; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class RunLog:
    """log.jsonl of a run: one JSON record per logging step, trimmed to the resumed step on resume."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if path.exists():  # read_log drops a line torn by a crash
            kept = [r for r in viz.read_log(path) if r.get("step", 0) <= resume_step]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _resume_point(out: Path, resume: bool, world: World) -> checkpoint.Checkpoint | None:
    """The checkpoint to continue from (the newest that loads with verified hashes, chosen by rank 0), or None."""
    loaded: list[checkpoint.Checkpoint] = []

    def choose() -> Path | None:
        found = checkpoint.latest(out)
        if found is not None and not resume:
            raise ConfigError(f"{out} already holds a run (newest checkpoint {found.name}); pass --resume to "
                              "continue it or choose a new --out")
        if found is None:
            return None
        ck = checkpoint.load_latest(out)
        if ck is None:
            raise checkpoint.CheckpointError(f"no checkpoint in {out} passes its sha256 check (newest: {found.name}); "
                                             "restore them from a backup, or start over with another --out")
        loaded.append(ck)  # rank 0 keeps what it loaded; the other ranks load the same path
        return ck.path

    path = world.on_main(choose)
    if path is None:
        return None
    return loaded[0] if loaded else checkpoint.load(path)


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train (or with resume=True continue from the newest checkpoint) the run described by config.

    Under torchrun every rank calls this; they join one process group for the duration.
    """
    validate(config)
    with session(config.device) as world:
        return _train(config, resume, world)


def _train(config: TrainConfig, resume: bool, world: World) -> TrainResult:
    """`train` inside a (possibly one-process) world."""
    device = world.device(config.device)
    out = Path(config.out)
    ck = _resume_point(out, resume, world)
    data = build_data(config)
    if ck is not None:
        _check_resumable(config, _train_config_of(ck.path, ck.meta))
        state = new_state(config, _model_of(ck.path, ck.meta)[0], device, world)
        restore_state(ck, state)
    else:
        state = new_state(config, model_spec(config, data), device, world)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_stale_temp(out)
        atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    first_step, started = state.step, time.monotonic()
    stopped = _loop(state, config, data, device, out, world)
    rate = (state.step - first_step) * config.batch_size / max(time.monotonic() - started, 1e-9)
    path = ck.path if ck is not None and state.step == first_step else checkpoint.checkpoint_dir(out, state.step)
    if world.is_main:
        if ck is None or state.step != first_step:
            save_state(out, state, config)
        if (out / "log.jsonl").exists():
            viz.loss_curve_png(out / "loss.png", out / "log.jsonl")
    world.barrier()
    return TrainResult(out, state.step, path, stopped, rate)


class _Clock:
    """Training time of the run: the elapsed time restored from the checkpoint plus this session's."""

    def __init__(self, state: TrainState, minutes: float | None, every_minutes: float | None) -> None:
        self.state, self.start, self.base = state, time.monotonic(), state.elapsed
        self.budget = None if minutes is None else 60 * minutes
        self.every = None if every_minutes is None else 60 * every_minutes
        self.next_save = None if self.every is None else (math.floor(self.base / self.every) + 1) * self.every

    def tick(self) -> float:
        """Update and return state.elapsed."""
        self.state.elapsed = self.base + time.monotonic() - self.start
        return self.state.elapsed

    def out_of_time(self) -> bool:
        """Whether the run's time budget (counting earlier sessions) is spent."""
        return self.budget is not None and self.tick() >= self.budget

    def save_due(self) -> bool:
        """Whether a timed checkpoint is due (each is due once, every `checkpoint_minutes`)."""
        if self.next_save is None or self.tick() < self.next_save:
            return False
        self.next_save = (math.floor(self.state.elapsed / self.every) + 1) * self.every
        return True


class _Window:
    """Sums between log steps, kept on the device (read back, with one sync, only when logging)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.time, self.count, self.samples = time.monotonic(), 0, 0
        self.loss: Tensor | None = None
        self.grad: Tensor | None = None
        self.bad: Tensor | None = None

    def add(self, loss: Tensor, grad_norm: Tensor, bad: Tensor, batch: int) -> None:
        """Count one step of `batch` samples; a skipped step's loss and gradient norm are left out."""
        keep = bad == 0
        loss, grad_norm = torch.where(keep, loss, 0.0), torch.where(keep, grad_norm, 0.0)
        self.loss = loss if self.loss is None else self.loss + loss
        self.grad = grad_norm if self.grad is None else self.grad + grad_norm
        self.bad = bad if self.bad is None else self.bad + bad
        self.count, self.samples = self.count + 1, self.samples + batch

    def flush(self, step: int, lr: float, elapsed: float, world: World) -> dict[str, Any]:
        """The window's log record (mean loss over ranks and good steps, gradient norm, skipped steps,
        throughput); starts a new window."""
        skipped = int(self.bad)
        good = self.count - skipped
        record: dict[str, Any] = {"step": step}
        if good:
            record["loss"] = float(world.sum_(self.loss.detach().clone())) / world.size / good
        record.update({"lr": lr, "samples_per_s": self.samples / max(time.monotonic() - self.time, 1e-9),
                       "elapsed": round(elapsed, 3), "skipped": skipped})
        if good:
            record["grad_norm"] = float(self.grad) / good
        self.reset()
        return record


class _Log:
    """Rank 0's log.jsonl, progress bar and echo lines, fed by a window of on-device sums."""

    def __init__(self, out: Path, state: TrainState, config: TrainConfig, world: World) -> None:
        self.file = RunLog(out / "log.jsonl", state.step) if world.is_main else None
        self.bar = tqdm(total=config.steps, initial=state.step, file=sys.stderr, dynamic_ncols=True, desc="train",
                        disable=not (world.is_main and config.progress and sys.stderr.isatty()))
        self.echo = world.is_main and config.progress and self.bar.disable
        self.window, self.world = _Window(), world

    def add(self, loss: Tensor, grad_norm: Tensor, bad: Tensor, batch: int) -> None:
        """Count one step."""
        self.window.add(loss, grad_norm, bad, batch)
        self.bar.update(1)

    def flush(self, step: int, lr: float, elapsed: float) -> None:
        """Write the open window's record (collective: every rank calls it at the same steps)."""
        if not self.window.count:
            return
        record = self.window.flush(step, lr, elapsed, self.world)
        if self.file is None:
            return
        self.file.write(record)
        if "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4g}")
        if self.echo:
            print(f"step {record['step']}  loss {record.get('loss', float('nan')):.5g}  "
                  f"{record['samples_per_s']:.0f} samples/s" + (f"  skipped {record['skipped']}"
                                                                  if record["skipped"] else ""), file=sys.stderr)


class BadSteps:
    """Steps with a non-finite loss or gradient, counted on the device: in all, in the current and the
    longest streak; read back (one sync) only by `tripped`."""

    def __init__(self, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.total, self.streak, self.longest = (torch.zeros((), dtype=torch.int64, device=device) for _ in range(3))

    def add(self, bad: Tensor) -> None:
        """Count one step (bad: a 0-d float tensor, 1 for a skipped step)."""
        bad = bad.to(torch.int64)
        self.total += bad
        self.streak = (self.streak + 1) * bad
        self.longest = torch.maximum(self.longest, self.streak)

    def tripped(self) -> bool:
        """Whether some streak reached the limit."""
        return bool(self.longest >= self.limit)

    def error(self, step: int, out: Path) -> NonFiniteError:
        """The exception that stops the run, naming the checkpoint to go back to."""
        last = checkpoint.latest(out)
        kept = f"the last good checkpoint is {last}" if last is not None else "no checkpoint was written"
        return NonFiniteError(f"training stopped at step {step}: {self.limit} steps in a row had a non-finite loss "
                              f"or gradient and were skipped ({int(self.total)} in all); {kept}. Lower --lr, keep "
                              "--grad-clip on, check the data, or raise --max-bad-steps")


def _halt_if_unhealthy(guard: BadSteps, log: _Log, state: TrainState, config: TrainConfig, clock: _Clock,
                       out: Path) -> None:
    """Raise NonFiniteError (after logging the open window) if a streak of bad steps reached the limit."""
    if guard.tripped():
        log.flush(state.step, learning_rate(config, state.step - 1, clock.tick()), clock.tick())
        raise guard.error(state.step, out)


def _agree(decide: Callable[[], bool], step: int, config: TrainConfig, world: World, device: torch.device) -> bool:
    """A time-dependent decision every rank takes together: alone at every step, several ranks at log steps
    only (where any rank's True wins)."""
    if world.size == 1:
        return decide()
    return step % config.log_every == 0 and bool(world.max_(torch.tensor(int(decide()), device=device)))


def _stop_reason(stop: StopRequest, clock: _Clock, step: int, config: TrainConfig, world: World,
                 device: torch.device) -> str | None:
    """'interrupted' or 'time' to stop now, else None; several ranks agree on it at log steps only."""
    if world.size > 1 and step % config.log_every:
        return None
    code = 2 if stop.requested else 1 if clock.out_of_time() else 0
    if world.size > 1:
        code = int(world.max_(torch.tensor(code, device=device)))
    return {0: None, 1: "time", 2: "interrupted"}[code]


def _lr_clock(config: TrainConfig, clock: _Clock, step: int, world: World, device: torch.device,
              current: float) -> float:
    """The training time the learning rate follows: this rank's, or (several ranks) the slowest rank's, taken
    at log steps so that every rank uses the same value."""
    if config.minutes is None or config.lr_schedule == "constant":
        return current
    if world.size == 1:
        return clock.tick()
    if step % config.log_every:
        return current
    return float(world.max_(torch.tensor(clock.tick(), dtype=torch.float64, device=device)))


def _loop(state: TrainState, config: TrainConfig, data: Data, device: torch.device, out: Path,
          world: World = SINGLE) -> str:
    """Run steps until config.steps, the time budget or a Ctrl-C; checkpoint, log and sample on the way."""
    batches = StepBatches(data, config, state.spec["data"]["num_classes"], device, world)
    log, guard = _Log(out, state, config, world), BadSteps(config.max_bad_steps, device)
    clock = _Clock(state, config.minutes, config.checkpoint_minutes)
    stopped = "time" if _agree(clock.out_of_time, 0, config, world, device) else None  # a resumed, spent budget
    lr_time = state.elapsed
    with StopRequest() as stop, log.bar:
        while state.step < config.steps and stopped is None:
            torch.manual_seed(step_seed(config.seed, state.step, f"torch/{world.rank}"))  # dropout layers
            x0, sigma, eps, cond = batches.get(state.step, state.denoiser.schedule)
            lr_time = _lr_clock(config, clock, state.step, world, device, lr_time)
            loss, grad_norm, bad = train_step(state, config, x0, sigma, eps, cond,
                                              learning_rate(config, state.step, lr_time), world)
            log.add(loss, grad_norm, bad, config.batch_size)
            guard.add(bad)
            if state.step % config.log_every == 0:
                log.flush(state.step, learning_rate(config, state.step - 1, lr_time), clock.tick())
                _halt_if_unhealthy(guard, log, state, config, clock, out)
            timed = _agree(clock.save_due, state.step, config, world, device)
            if (state.step % config.checkpoint_every == 0 or timed) and state.step < config.steps:
                _halt_if_unhealthy(guard, log, state, config, clock, out)
                clock.tick()
                if world.is_main:
                    save_state(out, state, config)
            if world.is_main and data.kind == "images" and config.sample_every and \
                    state.step % config.sample_every == 0:
                sample_grid(state, out / "samples" / f"step-{state.step:08d}.png", device)
            stopped = _stop_reason(stop, clock, state.step, config, world, device)
    log.flush(state.step, learning_rate(config, state.step - 1, lr_time), clock.tick())  # the last, partial window
    _halt_if_unhealthy(guard, log, state, config, clock, out)
    clock.tick()
    return stopped or "done"


@torch.no_grad()
def sample_grid(state: TrainState, path: Path, device: torch.device, per_class: int = 8, steps: int = 18) -> Path:
    """Write a grid of EMA samples (one row per class for conditional models) to path."""
    spec = state.spec
    ema_denoiser = wrap(state.ema.module, spec["parameterization"], state.denoiser.schedule, spec["sigma_data"])
    num_classes = spec["data"]["num_classes"]
    n = per_class * num_classes if num_classes else 64
    cond = None if not num_classes else torch.arange(n) % num_classes
    x = sampling.generate(ema_denoiser, state.denoiser.schedule, spec["data"]["shape"], n=n, steps=steps,
                          seed=0, cond=cond, device=device)
    return viz.image_grid_png(path, x.cpu(), labels=cond, nrow=8)


# ------------------------------------------------------------------------------------------ loading


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint a path names: a `ckpt-<step>` folder itself, or a run folder's newest complete one."""
    path = Path(path)
    if not path.exists():
        raise checkpoint.CheckpointError(f"run folder {str(path)!r} does not exist; give the --out folder of a "
                                         "training run")
    if path.is_file():
        raise checkpoint.CheckpointError(checkpoint.not_a_folder(path))
    if (path / checkpoint.MANIFEST).exists() or path.name.startswith(checkpoint.PREFIX):
        return path
    found = checkpoint.latest(path)
    if found is not None:
        return found
    existing = checkpoint.list_checkpoints(path)
    if not existing:
        raise checkpoint.CheckpointError(f"{str(path)!r} holds no checkpoint; train one with "
                                         f"`rediffuse train --out {path}`")
    try:
        checkpoint.check(existing[-1])
    except checkpoint.CheckpointError as err:
        raise checkpoint.CheckpointError(f"{str(path)!r} holds no complete checkpoint: {err}") from None
    return existing[-1]


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The model spec of a run's checkpoint (net, schedule, parameterization, sigma_data, data shape/classes)."""
    path = find_checkpoint(run_dir)
    meta = checkpoint.read_manifest(path)["meta"]
    _train_config_of(path, meta)
    return {**_model_of(path, meta)[0], "checkpoint": str(path)}


def load_run(run_dir: str | Path, ema: bool = True, device: torch.device | str = "cpu"
             ) -> tuple[Denoiser, schedules.Schedule, TrainConfig]:
    """(denoiser in eval mode, schedule, training config) of a run's newest checkpoint, for sampling."""
    path = find_checkpoint(run_dir)
    part = "ema" if ema else "model"
    ck = checkpoint.load(path, parts=[part])
    _, net, denoiser = _model_of(path, ck.meta)
    load_weights(net, ck.tensors[part], path, part)
    denoiser.to(device).eval().requires_grad_(False)
    return denoiser, denoiser.schedule, _train_config_of(path, ck.meta)
