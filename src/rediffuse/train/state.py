"""The live state of a run (network, model, EMA, AdamW, step, training time) and its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse import checkpoint
from rediffuse.config import IDENTITY, TrainConfig
from rediffuse.distributed import SINGLE, World, wrap_ddp
from rediffuse.core.ema import EMA
from rediffuse.core.spec import ModelSpec, as_json
from rediffuse.errors import CheckpointError, ConfigError
from rediffuse.objectives import Objective
from rediffuse.runs import load_weights


@dataclass
class TrainState:
    """The live objects of a run (`model` calls the network through DDP when there are several ranks)."""

    net: nn.Module
    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    spec: ModelSpec
    step: int = 0
    elapsed: float = 0.0
    scaler: Any = None  # torch.amp.GradScaler of an fp16 run


def make_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, fused where the device allows (so a non-finite step is skipped without a host sync)."""
    options = dict(lr=config.lr, weight_decay=config.weight_decay)
    try:
        return torch.optim.AdamW(net.parameters(), fused=True, **options)
    except RuntimeError:  # no fused kernel for this device or torch version
        return torch.optim.AdamW(net.parameters(), **options)


def step_unless(optimizer: torch.optim.Optimizer, bad: Tensor) -> None:
    """optimizer.step() unless bad (a float 0-d tensor) is 1: decided on the device for fused optimizers."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = bad  # the fused Adam(W) kernels skip the update, as under torch.amp.GradScaler
        optimizer.step()
    elif not bool(bad):  # other optimizers: one host sync
        optimizer.step()


def new_state(config: TrainConfig, objective: Objective, spec: ModelSpec, device: torch.device,
              world: World = SINGLE, initialise: bool = True) -> TrainState:
    """Freshly initialised network (weights seeded by config.seed, then the objective's `initialise` unless a
    checkpoint will be restored over them), EMA and AdamW; DDP for several ranks."""
    torch.manual_seed(config.seed)
    net = objective.build(spec)
    start = getattr(objective, "initialise", None)  # optional in the protocol
    if initialise and start is not None:
        start(net, spec)
    model = objective.model(spec, net).to(device)
    ema = EMA(net, config.ema_decay, config.ema_warmup)
    if world.size > 1:
        model = objective.model(spec, wrap_ddp(net, device, world))
    if config.compile:
        model = torch.compile(model)  # the same module and weights; checkpoints save the plain network
    scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None
    return TrainState(net, model, ema, make_optimizer(net, config), spec, scaler=scaler)


def save_state(out: Path, state: TrainState, config: TrainConfig) -> Path:
    """A resumable checkpoint of the state (weights, EMA, optimizer, RNG states, config); refuses NaN/inf."""
    opt_tensors, opt_rest = checkpoint.flatten_optimizer(state.optimizer.state_dict())
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    meta = {"model": as_json(state.spec), "train_config": config.to_dict(), "optimizer": opt_rest,
            "elapsed": state.elapsed, **({} if state.scaler is None else {"grad_scaler": state.scaler.state_dict()})}
    tensors = {"model": state.net.state_dict(), "ema": state.ema.state_dict(), "optimizer": opt_tensors,
               "rng": rng}
    return checkpoint.save(out, state.step, tensors, meta, keep=config.keep_last)


def restore_state(ck: checkpoint.Checkpoint | Path, state: TrainState) -> None:
    """Load a checkpoint saved by `save_state` into a freshly built state (CheckpointError if it does not fit)."""
    ck = ck if isinstance(ck, checkpoint.Checkpoint) else checkpoint.load(ck)
    for part in ("model", "ema", "optimizer", "rng"):
        if part not in ck.tensors:
            raise CheckpointError(f"checkpoint {str(ck.path)!r} has no {part!r} part; it cannot resume "
                                  "training (it may be a sampling-only checkpoint)")
    load_weights(state.net, ck.tensors["model"], ck.path, "model")
    load_weights(state.ema.module, ck.tensors["ema"], ck.path, "ema")
    _load_optimizer(state.optimizer, ck)
    try:
        torch.set_rng_state(ck.tensors["rng"]["cpu"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {str(ck.path)!r} has an unusable RNG state ({err})") from None
    cuda_states = [ck.tensors["rng"][k] for k in sorted(ck.tensors["rng"]) if k.startswith("cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    state.step, state.elapsed = ck.step, float(ck.meta.get("elapsed", 0.0))
    if state.scaler is not None and "grad_scaler" in ck.meta:
        state.scaler.load_state_dict(ck.meta["grad_scaler"])


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
        raise CheckpointError(f"checkpoint {str(ck.path)!r}: optimizer state does not fit the model "
                              f"({' '.join(str(err).split())})") from None


def check_resumable(config: TrainConfig, saved: TrainConfig) -> None:
    """Raise ConfigError if config changes a key that defines the saved run's model or data."""
    changed = [k for k in IDENTITY if getattr(config, k) != getattr(saved, k)]
    if changed:
        k = changed[0]
        raise ConfigError(f"cannot resume with a different {k} ({getattr(saved, k)!r} in the run, "
                          f"{getattr(config, k)!r} now); keep it or start a new run with another --out")


def resume_point(out: Path, resume: bool, world: World) -> checkpoint.Checkpoint | None:
    """The checkpoint to continue from (the newest that loads with verified hashes, chosen by rank 0), or None."""
    loaded: list[checkpoint.Checkpoint] = []

    def choose() -> Path | None:
        """Rank 0's pick: the newest verified checkpoint's path, or None for a new run."""
        held = checkpoint.written(out)
        if held and not resume:
            raise ConfigError(f"{out} already holds a run (newest checkpoint {held[-1].name}); pass --resume to "
                              "continue it or choose a new --out")
        found = checkpoint.latest(out, warn=checkpoint.warn_once) if resume else None
        if found is None and held:
            raise CheckpointError(f"no checkpoint in {out} passes its sha256 check (newest: {held[-1].name}); "
                                  "restore them from a backup, or start over with another --out")
        if found is None:
            return None
        ck = checkpoint.load(found)
        loaded.append(ck)  # rank 0 keeps what it loaded; the other ranks load the same path
        return ck.path

    path = world.on_main(choose)
    if path is None:
        return None
    return loaded[0] if loaded else checkpoint.load(path)
