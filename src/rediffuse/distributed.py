"""Several processes, one run: torchrun's environment, the process group, and work split by rank.

`torchrun --nproc_per_node=N -m rediffuse train ...` starts N copies of the program with RANK, WORLD_SIZE and
LOCAL_RANK in the environment. `session` joins them into a process group (gloo on CPU, nccl on CUDA) and
hands out a `World`: this process's rank, the number of processes, and small collectives that are no-ops
for a world of one, so the same code runs with and without torchrun.

Sampling (`samplers.generation.generate` given a World) splits whole batches of sample indices between the
ranks; since sample i depends only on (seed, i) and the batches are those of one process, the gathered samples
equal one process's bit for bit.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

DEVICE_HELP = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps"


def pick_device(name: str) -> torch.device:
    """The torch device a --device name means: 'auto' is CUDA if present, then MPS, then the CPU; ValueError
    naming the fix for an unknown or unavailable device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError, OverflowError):
        raise ValueError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} requested but Apple MPS is not available here; use --device auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use {DEVICE_HELP}")
    return device


def _env_int(name: str, default: int) -> int:
    """An integer environment variable set by torchrun (default when unset)."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from None


@dataclass(frozen=True)
class World:
    """This process's rank among `size` processes (one process without torchrun), with simple collectives."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK for a CUDA device under torchrun, else the named device."""
        device = pick_device(name)
        if device.type == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def split(self, n: int) -> slice:
        """This rank's equal share [rank * n/size, (rank+1) * n/size) of n items (n must divide evenly)."""
        if n % self.size:
            raise ValueError(f"{n} items cannot be split evenly over {self.size} processes")
        share = n // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def block(self, n: int) -> range:
        """This rank's contiguous block of n items, sizes differing by at most one (earlier ranks larger)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's obj on every rank (picklable objects)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's obj, in rank order, on every rank (picklable objects)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """fn() run on rank 0 only; its result, or the exception it raised, reaches every rank."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # re-raised on every rank below
                error = err
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def max_(self, tensor: Tensor) -> Tensor:
        """tensor replaced, in place, by its maximum over ranks (no host sync on CUDA)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def sum_(self, tensor: Tensor) -> Tensor:
        """tensor replaced, in place, by its sum over ranks."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def agree(self, read: Callable[[], float], step: int, every: int, otherwise: float = 0.0) -> float:
        """A value all ranks take together: read() alone in a world of one; with several ranks the maximum of
        every rank's read() at steps that are multiples of `every`, and `otherwise` (read() uncalled) between."""
        if self.size == 1:
            return float(read())
        if step % every:
            return otherwise
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        return float(self.max_(torch.tensor(float(read()), dtype=torch.float64, device=on)))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.size > 1:
            dist.barrier()


SINGLE = World()


def from_env() -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process when they are unset)."""
    world = World(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if world.size < 1 or not 0 <= world.rank < world.size:
        raise ValueError(f"RANK={world.rank} and WORLD_SIZE={world.size} do not fit; launch with torchrun")
    return world


def current() -> World:
    """The world of the live process group, or a single process when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (true without torchrun); valid before and after a session."""
    return _env_int("RANK", 0) == 0


def backend_for(device: torch.device) -> str:
    """The process-group backend for a device type: nccl for CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def session(device_name: str) -> Iterator[World]:
    """Join torchrun's process group for the duration (if launched by torchrun and not joined yet)."""
    world = from_env()
    if world.size == 1 or dist.is_initialized():
        yield current() if world.size > 1 else world
        return
    device = world.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device))
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def wrap_ddp(net: torch.nn.Module, device: torch.device, world: World) -> torch.nn.Module:
    """net inside DistributedDataParallel for several processes (gradients averaged over ranks), else net."""
    if world.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
