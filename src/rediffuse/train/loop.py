"""The training loop: AdamW, EMA, checkpoints, exact resume, time budgets, logs, DDP and health checks.

What is learned is the run's objective (`rediffuse.objectives`): the loop asks it for the model, each step's
randomness and a per-sample loss, and minimises that loss's mean; it knows nothing else of it.

Every random choice of step k (the batch, the objective's draws, and the global RNG that dropout layers use)
is a function of (seed, k), so on CPU N steps plus a resumed N steps equal 2N uninterrupted steps bit for bit.

Under `torchrun --nproc_per_node=P` the P processes train one model with DistributedDataParallel: every rank
draws the same global batch and its randomness and keeps its 1/P slice, so P processes compute what one
process computes (up to float summation order); rank 0 logs and checkpoints. Time-dependent decisions (the
budget, timed checkpoints, a cosine rate over the budget) are agreed on by all ranks at log steps.

A step whose loss or gradient is not finite is skipped on the device (no host sync) and counted; after
`max_bad_steps` of them in a row the run stops with `NonFiniteError`, its last checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from rediffuse import checkpoint, objectives, runs, threads, viz
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import Data, build_data
from rediffuse.distributed import SINGLE, World, session
from rediffuse.io import atomic_write
from rediffuse.objectives import Batch, Draws, Objective
from rediffuse.train.batches import StepBatches, step_seed
from rediffuse.train.clock import Clock, Now
from rediffuse.train.lock import run_lock
from rediffuse.train.monitor import BadSteps, Log, StopRequest
from rediffuse.train.level import calibrated
from rediffuse.train.state import (TrainState, check_resumable, new_state, restore_state, resume_point, save_state,
                                   step_unless)


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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast of a precision on a device: 'auto' is bf16 on CUDA and fp32 (none) elsewhere."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def train_step(state: TrainState, objective: Objective, batch: Batch, draws: Draws, lr: float,
               config: TrainConfig, world: World = SINGLE) -> tuple[Tensor, Tensor, Tensor]:
    """One optimizer step on the mean of the objective's per-sample loss, skipped if the loss or gradient is not
    finite (on any rank).

    Returns the detached, on-device loss, gradient norm (before clipping) and skip flag (float 0. or 1.).
    """
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    state.net.train()
    with autocast(batch.x.device, config.precision):
        loss = objective.loss(state.model, batch, draws).mean()
    state.optimizer.zero_grad(set_to_none=True)
    scaler = state.scaler
    if scaler is None:
        loss.backward()
    else:  # fp16: a dynamic loss scale (overflowing steps are skipped and halve it)
        scaler.scale(loss).backward()
        scaler.unscale_(state.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(state.net.parameters(), config.grad_clip or math.inf)
    bad = world.max_((~(torch.isfinite(loss) & torch.isfinite(grad_norm))).float())
    if scaler is None:
        step_unless(state.optimizer, bad)
    else:
        if not bool(bad):
            scaler.step(state.optimizer)
        scaler.update()
    state.ema.update(state.net, state.step, skip=bad)
    state.step += 1
    return loss.detach(), grad_norm, bad


def train(config: TrainConfig, resume: bool = False, clock: Now | None = None, data: Data | None = None,
          callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> TrainResult:
    """Train (or with resume=True continue from the newest checkpoint) the run described by config.

    `clock` (seconds, default `time.monotonic`) measures training time. `data` replaces what config.data names
    (in-memory or streamed data from `rediffuse.fit`); each of `callbacks` gets every log record (rank 0).
    Under torchrun every rank calls this; they join one process group for the duration, and rank 0 holds the
    run folder's lock (`train.lock`).
    """
    objectives.validate(config)
    with session(config.device) as world, run_lock(config.out, world.is_main):
        return _train(config, resume, world, clock, data, tuple(callbacks))


def _train(config: TrainConfig, resume: bool, world: World, clock: Now | None, given: Data | None,
           callbacks: tuple[Callable[[dict[str, Any]], None], ...]) -> TrainResult:
    """`train` inside a (possibly one-process) world."""
    device, objective = world.device(config.device), objectives.get(config)
    out = Path(config.out)
    ck = resume_point(out, resume, world)
    data = build_data(config) if given is None else given
    if ck is not None:
        check_resumable(config, runs.config_of(ck.path, ck.meta))
        spec = runs.spec_of(ck.path, ck.meta)
        state = new_state(config, objective, spec, device, world, initialise=False)
        restore_state(ck, state)
    else:
        state = new_state(config, objective, objective.spec(data), device, world)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_stale_temp(out)
        atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
    first_step, started = state.step, time.monotonic()
    stopped = _loop(state, objective, config, data, device, out, world, clock, callbacks)
    rate = (state.step - first_step) * config.batch_size / max(time.monotonic() - started, 1e-9)
    path = ck.path if ck is not None and state.step == first_step else checkpoint.checkpoint_dir(out, state.step)
    if world.is_main:
        if ck is None or state.step != first_step:
            state.spec = calibrated(state.spec, lambda: objective.model(state.spec, state.ema.module), config, device)
            save_state(out, state, config)
        if (out / "log.jsonl").exists():
            viz.loss_curve_png(out / "loss.png", out / "log.jsonl")
    world.barrier()
    return TrainResult(out, state.step, path, stopped, rate)


def _halt_if_unhealthy(guard: BadSteps, log: Log, state: TrainState, config: TrainConfig, clock: Clock,
                       out: Path) -> None:
    """Raise NonFiniteError (after logging the open window) if a streak of bad steps reached the limit."""
    if guard.tripped():
        log.flush(state.step, learning_rate(config, state.step - 1, clock.tick()), clock.tick())
        raise guard.error(state.step, out)


STOP_REASONS = {0: None, 1: "time", 2: "interrupted"}


def _loop(state: TrainState, objective: Objective, config: TrainConfig, data: Data, device: torch.device,
          out: Path, world: World, now: Now | None, callbacks: tuple[Callable[[dict[str, Any]], None], ...]) -> str:
    """Run steps until config.steps, the time budget or a Ctrl-C; checkpoint, log and preview on the way."""
    batches = StepBatches(data, config, objective, device, world)
    log, guard = Log(out, state.step, config, world, callbacks), BadSteps(config.max_bad_steps, device)
    every, clock = config.log_every, Clock(state, config.minutes, config.checkpoint_minutes, now)
    stopped = "time" if world.agree(clock.out_of_time, 0, every) else None  # a resumed, spent budget
    lr_time, lr_follows_time = state.elapsed, config.minutes is not None and config.lr_schedule != "constant"
    with StopRequest() as stop, log.bar:
        while state.step < config.steps and stopped is None:
            torch.manual_seed(step_seed(config.seed, state.step, f"torch/{world.rank}"))  # dropout layers
            batch, draws = batches.get(state.step, state.model)
            if lr_follows_time:
                lr_time = world.agree(clock.tick, state.step, every, otherwise=lr_time)
            loss, grad_norm, bad = train_step(state, objective, batch, draws,
                                              learning_rate(config, state.step, lr_time), config, world)
            log.add(loss, grad_norm, bad, config.batch_size)
            guard.add(bad)
            if state.step % every == 0:
                log.flush(state.step, learning_rate(config, state.step - 1, lr_time), clock.tick())
                _halt_if_unhealthy(guard, log, state, config, clock, out)
                threads.revisit()  # --threads auto follows the machine's load
            timed = world.agree(clock.save_due, state.step, every)
            if (state.step % config.checkpoint_every == 0 or timed) and state.step < config.steps:
                _halt_if_unhealthy(guard, log, state, config, clock, out)
                clock.tick()
                if world.is_main:
                    save_state(out, state, config)
            if world.is_main and config.sample_every and state.step % config.sample_every == 0:
                ema_model = objective.model(state.spec, state.ema.module)
                objective.preview(ema_model, state.spec, out / "samples" / f"step-{state.step:08d}.png", device)
            code = world.agree(lambda: 2 if stop.requested else 1 if clock.out_of_time() else 0, state.step, every)
            stopped = STOP_REASONS[int(code)]
    log.flush(state.step, learning_rate(config, state.step - 1, lr_time), clock.tick())  # the last, partial window
    _halt_if_unhealthy(guard, log, state, config, clock, out)
    log.close()
    clock.tick()
    return stopped or "done"
