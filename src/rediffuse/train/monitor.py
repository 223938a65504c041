"""What rank 0 tells about a run and what stops it: log.jsonl and the progress bar, fed by on-device window
sums; the count of non-finite steps; Ctrl-C and SIGTERM as a request to stop."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from rediffuse import checkpoint, viz
from rediffuse.config import TrainConfig
from rediffuse.distributed import World
from rediffuse.errors import NonFiniteError
from rediffuse.io import atomic_write
from rediffuse.tensorboard_log import TensorBoardLog


class RunLog:
    """log.jsonl of a run: one JSON record per logging step, trimmed to the resumed step on resume."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        if path.exists():  # read_log drops a line torn by a crash
            kept = [r for r in viz.read_log(path) if r.get("step", 0) <= resume_step]
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class Window:
    """Sums between log steps, kept on the device (read back, with one sync, only when logging)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start an empty window."""
        self.time, self.count, self.samples = time.monotonic(), 0, 0
        self.loss: Tensor | None = None
        self.grad: Tensor | None = None
        self.bad: Tensor | None = None

    def close(self) -> None:
        """Close the TensorBoard event file (log.jsonl is closed after every record)."""
        if self.board is not None:
            self.board.close()

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


class Log:
    """Rank 0's log.jsonl, progress bar and echo lines, fed by a window of on-device sums."""

    def __init__(self, out: Path, step: int, config: TrainConfig, world: World,
                 callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.file = RunLog(out / "log.jsonl", step) if world.is_main else None
        self.board = TensorBoardLog(out) if world.is_main and config.log == "tensorboard" else None
        self.callbacks = tuple(callbacks) + ((self.board,) if self.board is not None else ())
        self.bar = tqdm(total=config.steps, initial=step, file=sys.stderr, dynamic_ncols=True, desc="train",
                        disable=not (world.is_main and config.progress and sys.stderr.isatty()))
        self.echo = world.is_main and config.progress and self.bar.disable
        self.window, self.world = Window(), world

    def close(self) -> None:
        """Close the TensorBoard event file (log.jsonl is closed after every record)."""
        if self.board is not None:
            self.board.close()

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
        for callback in self.callbacks:
            callback(dict(record))
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


class StopRequest:
    """Turns the first Ctrl-C or SIGTERM (a scheduler's or torchrun's shutdown) into a request checked between
    steps, so the run stops with a checkpoint; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        """Record the first signal; raise KeyboardInterrupt at the second."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        """Install the handler (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        """Restore the previous handlers."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
