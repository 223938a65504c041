"""The training loop for points and images: AdamW, EMA, checkpoints, exact resume, logs and pictures.

Every random choice of step k (the batch, the noise levels, the noise, the label dropout) is a function of
(seed, k), and the global RNG (used by dropout) is saved with each checkpoint, so on CPU N steps plus a
resumed N steps equal 2N uninterrupted steps bit for bit.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from rediffuse import checkpoint, losses, sampling, schedules, viz
from rediffuse.data import toy2d
from rediffuse.denoisers import PARAMETERIZATIONS, Denoiser, wrap
from rediffuse.ema import EMA
from rediffuse.nets.mlp import MLP
from rediffuse.nets.unet2d import UNet2D

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet2D}
LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """An invalid training configuration (a usage error)."""


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
    keep_last: int = _opt(3, "keep the newest K checkpoints")
    log_every: int = _opt(100, "log the mean loss every N steps")
    sample_every: int = _opt(0, "image runs: write a grid of EMA samples every N steps (0 = off)")
    minutes: float | None = _opt(None, "time budget: stop cleanly with a checkpoint after M minutes")
    progress: bool = _opt(True, "show a progress bar on a terminal")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from a dict of field values; an unknown key is a ConfigError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(sorted(names))}")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if not _type_ok(types[key], value):
                raise ConfigError(f"config key {key!r} must be {types[key]}, got {value!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
                                       "dict": (dict,)}


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
    need(config.sigma_data == "auto" or (isinstance(config.sigma_data, (int, float)) and config.sigma_data > 0),
         f"sigma_data must be 'auto' or a positive number, got {config.sigma_data!r}")
    for name in ("batch_size", "steps", "num_points", "checkpoint_every", "keep_last", "log_every"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 1,
             f"{name} must be a positive integer, got {getattr(config, name)!r}")
    for name in ("warmup_steps", "sample_every"):
        need(isinstance(getattr(config, name), int) and getattr(config, name) >= 0,
             f"{name} must be a non-negative integer, got {getattr(config, name)!r}")
    need(config.lr > 0, f"lr must be positive, got {config.lr}")
    need(config.weight_decay >= 0 and config.grad_clip >= 0, "weight_decay and grad_clip must be >= 0")
    need(0 <= config.label_dropout < 1, f"label_dropout must be in [0, 1), got {config.label_dropout}")
    need(0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}")
    need(config.minutes is None or config.minutes > 0, f"minutes must be positive, got {config.minutes}")
    need(config.image_size is None or config.image_size >= 1, "image_size must be a positive integer")
    need(isinstance(config.net_kwargs, dict) and isinstance(config.schedule_kwargs, dict),
         "net_kwargs and schedule_kwargs must be tables (dicts)")
    resolve_device(config.device)


def resolve_device(name: str) -> torch.device:
    """A torch device from its name; ConfigError if unknown or unavailable."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
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


def build_data(config: TrainConfig) -> Data:
    """Load or draw the training set named by config.data."""
    if data_kind(config.data) == "points":
        generator = torch.Generator().manual_seed(config.seed)
        return Data(toy2d.points_dataset(config.data, config.num_points, generator), None, "points")
    from rediffuse.data.images import load_images

    if ":" not in config.data and config.data != "digits" and not Path(config.data).exists():
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
    except TypeError as err:
        raise ConfigError(f"bad schedule_kwargs for {config.schedule!r}: {err}") from None
    return {"net": kind, "net_config": net_config, "schedule": schedule_config,
            "parameterization": config.parameterization, "sigma_data": sigma_data,
            "data": {"kind": data.kind, "shape": list(data.shape), "num_classes": num_classes, "spec": config.data}}


def build_net(kind: str, net_config: dict[str, Any]) -> nn.Module:
    """A network by kind ('mlp' or 'unet') from its config dict."""
    try:
        return NETS[kind].from_config(net_config)
    except TypeError as err:
        raise ConfigError(f"bad net_kwargs for {kind!r}: {err}") from None


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


# ---------------------------------------------------------------------------------------- the loop


@dataclass
class TrainState:
    """The live objects of a run."""

    net: nn.Module
    denoiser: Denoiser
    ema: EMA
    optimizer: torch.optim.Optimizer
    spec: dict[str, Any]
    step: int = 0
    elapsed: float = 0.0


@dataclass
class TrainResult:
    """How a run ended: folder, final step, last checkpoint, and why it stopped ('done', 'time', 'interrupted')."""

    out: Path
    step: int
    checkpoint: Path
    stopped: str


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate at a (0-based) step: linear warmup, then constant or cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def train_step(state: TrainState, config: TrainConfig, x0: Tensor, sigma: Tensor, noise: Tensor,
               cond: Tensor | None, lr: float) -> tuple[Tensor, Tensor | None]:
    """One optimizer step on one batch; returns the (detached, on-device) loss and gradient norm."""
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.net.train()
    with _autocast(x0.device):
        loss = losses.denoising_loss(state.denoiser, x0, sigma, noise, config.weighting, cond,
                                     state.denoiser.sigma_data, config.min_snr_gamma)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = None
    if config.grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(state.net.parameters(), config.grad_clip)
    state.optimizer.step()
    state.ema.update(state.net, state.step)
    state.step += 1
    return loss.detach(), grad_norm


def new_state(config: TrainConfig, spec: dict[str, Any], device: torch.device) -> TrainState:
    """Freshly initialised network, EMA and AdamW (weights seeded by config.seed)."""
    torch.manual_seed(config.seed)
    net, denoiser = build_model(spec)
    denoiser.to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return TrainState(net, denoiser, EMA(net, config.ema_decay, config.ema_warmup), optimizer, spec)


def save_state(out: Path, state: TrainState, config: TrainConfig) -> Path:
    """A resumable checkpoint of the state (weights, EMA, optimizer, RNG states, config)."""
    opt_tensors, opt_rest = checkpoint.flatten_optimizer(state.optimizer.state_dict())
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"model": state.spec, "train_config": config.to_dict(), "optimizer": opt_rest,
            "elapsed": state.elapsed}
    tensors = {"model": state.net.state_dict(), "ema": state.ema.state_dict(), "optimizer": opt_tensors,
               "rng": rng}
    return checkpoint.save(out, state.step, tensors, meta, keep=config.keep_last)


def restore_state(path: Path, state: TrainState) -> None:
    """Load a checkpoint saved by `save_state` into a freshly built state."""
    ck = checkpoint.load(path)
    state.net.load_state_dict(ck.tensors["model"])
    state.ema.load_state_dict(ck.tensors["ema"])
    state.optimizer.load_state_dict(checkpoint.unflatten_optimizer(ck.tensors["optimizer"], ck.meta["optimizer"]))
    torch.set_rng_state(ck.tensors["rng"]["cpu"])
    cuda_states = [ck.tensors["rng"][k] for k in sorted(ck.tensors["rng"]) if k.startswith("cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    state.step, state.elapsed = ck.step, float(ck.meta.get("elapsed", 0.0))


def saved_config(run_dir: str | Path) -> TrainConfig | None:
    """The training config stored in a run's newest complete checkpoint, or None if there is none."""
    path = checkpoint.latest(run_dir)
    return None if path is None else TrainConfig.from_dict(checkpoint.read_manifest(path)["meta"]["train_config"])


def _check_resumable(config: TrainConfig, saved: TrainConfig) -> None:
    changed = [k for k in IDENTITY if getattr(config, k) != getattr(saved, k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"cannot resume with a different {k} ({getattr(saved, k)!r} in the run, "
                          f"{getattr(config, k)!r} now); keep it or start a new run with another --out")


class StopRequest:
    """Turns the first Ctrl-C into a request checked between steps; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class RunLog:
    """log.jsonl of a run: one JSON record per logging step, trimmed to the resumed step on resume."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if path.exists():
            kept = [r for r in viz.read_log(path) if r.get("step", 0) <= resume_step]
            checkpoint.atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train (or with resume=True continue from the newest checkpoint) the run described by config."""
    validate(config)
    device = resolve_device(config.device)
    out = Path(config.out)
    found = checkpoint.latest(out)
    if found is not None and not resume:
        raise ConfigError(f"{out} already holds a run (newest checkpoint {found.name}); pass --resume to continue "
                          "it or choose a new --out")
    data = build_data(config)
    if found is not None:
        manifest = checkpoint.read_manifest(found)
        _check_resumable(config, TrainConfig.from_dict(manifest["meta"]["train_config"]))
        state = new_state(config, manifest["meta"]["model"], device)
        restore_state(found, state)
    else:
        state = new_state(config, model_spec(config, data), device)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    first_step = state.step
    stopped = _loop(state, config, data, device, out)
    path = save_state(out, state, config) if found is None or state.step != first_step else found
    if (out / "log.jsonl").exists():
        viz.loss_curve_png(out / "loss.png", out / "log.jsonl")
    return TrainResult(out, state.step, path, stopped)


class _Clock:
    """Training time of the run: the elapsed time restored from the checkpoint plus this session's."""

    def __init__(self, state: TrainState, minutes: float | None) -> None:
        self.state, self.start, self.base = state, time.monotonic(), state.elapsed
        self.deadline = None if minutes is None else self.start + 60 * minutes

    def tick(self) -> float:
        """Update and return state.elapsed."""
        self.state.elapsed = self.base + time.monotonic() - self.start
        return self.state.elapsed

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class _Window:
    """Losses summed on the device between log steps (read back, with one sync, only when logging)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.time, self.loss, self.grad, self.count, self.samples = time.monotonic(), None, None, 0, 0

    def add(self, loss: Tensor, grad_norm: Tensor | None, batch: int) -> None:
        self.loss = loss if self.loss is None else self.loss + loss
        if grad_norm is not None:
            self.grad = grad_norm if self.grad is None else self.grad + grad_norm
        self.count, self.samples = self.count + 1, self.samples + batch

    def flush(self, step: int, lr: float, elapsed: float) -> dict[str, Any]:
        """The window's log record (mean loss and gradient norm, throughput); starts a new window."""
        record = {"step": step, "loss": float(self.loss) / self.count, "lr": lr,
                  "samples_per_s": self.samples / max(time.monotonic() - self.time, 1e-9),
                  "elapsed": round(elapsed, 3)}
        if self.grad is not None:
            record["grad_norm"] = float(self.grad) / self.count
        self.reset()
        return record


def _loop(state: TrainState, config: TrainConfig, data: Data, device: torch.device, out: Path) -> str:
    """Run steps until config.steps, the time budget or a Ctrl-C; checkpoint, log and sample on the way."""
    null_label = state.spec["data"]["num_classes"]
    x_all = data.x.to(device)
    labels_all = data.labels.to(device) if null_label is not None else None
    order = DataOrder(len(x_all), config.batch_size, config.seed, device)
    noise = StepNoise(config.seed, device)
    log = RunLog(out / "log.jsonl", state.step)
    bar = tqdm(total=config.steps, initial=state.step, file=sys.stderr, dynamic_ncols=True, desc="train",
               disable=not (config.progress and sys.stderr.isatty()))
    echo = config.progress and bar.disable
    clock, window = _Clock(state, config.minutes), _Window()
    stopped = "done"
    with StopRequest() as stop, bar:
        while state.step < config.steps:
            idx = order.indices(state.step)
            x0 = x_all[idx]
            labels = None if labels_all is None else labels_all[idx]
            sigma, eps, cond = noise.draw(state.step, x0, state.denoiser.schedule, labels, config.label_dropout,
                                          null_label)
            loss, grad_norm = train_step(state, config, x0, sigma, eps, cond, learning_rate(config, state.step))
            window.add(loss, grad_norm, x0.shape[0])
            bar.update(1)
            if state.step % config.log_every == 0:
                record = window.flush(state.step, learning_rate(config, state.step - 1), clock.tick())
                log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4g}")
                if echo:
                    print(f"step {record['step']}  loss {record['loss']:.5g}  "
                          f"{record['samples_per_s']:.0f} samples/s", file=sys.stderr)
            if state.step % config.checkpoint_every == 0 and state.step < config.steps:
                clock.tick()
                save_state(out, state, config)
            if data.kind == "images" and config.sample_every and state.step % config.sample_every == 0:
                sample_grid(state, out / "samples" / f"step-{state.step:08d}.png", device)
            if stop.requested or clock.out_of_time():
                stopped = "interrupted" if stop.requested else "time"
                break
    if window.count:  # the last, partial window
        log.write(window.flush(state.step, learning_rate(config, state.step - 1), clock.tick()))
    clock.tick()
    return stopped


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
    return {**checkpoint.read_manifest(path)["meta"]["model"], "checkpoint": str(path)}


def load_run(run_dir: str | Path, ema: bool = True, device: torch.device | str = "cpu"
             ) -> tuple[Denoiser, schedules.Schedule, TrainConfig]:
    """(denoiser in eval mode, schedule, training config) of a run's newest checkpoint, for sampling."""
    path = find_checkpoint(run_dir)
    part = "ema" if ema else "model"
    ck = checkpoint.load(path, parts=[part])
    net, denoiser = build_model(ck.meta["model"])
    net.load_state_dict(ck.tensors[part])
    denoiser.to(device).eval().requires_grad_(False)
    return denoiser, denoiser.schedule, TrainConfig.from_dict(ck.meta["train_config"])
