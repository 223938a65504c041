"""Each step's global batch and its randomness, pure functions of (seed, step), and this rank's slice of them.

Every rank draws the same global batch (data order, then the objective's draws from per-step generators)
and keeps its 1/P share, so P processes together see exactly what one process sees. Points and images are
visited in a per-epoch order (`DataOrder`); text is cut into windows of `block_length` tokens at offsets from
the step's CPU stream "windows".
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from rediffuse import modalities
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import Data
from rediffuse.data.text import random_windows
from rediffuse.distributed import World
from rediffuse.errors import ConfigError
from rediffuse.objectives import Batch, Draws, Objective
from rediffuse.objectives.base import take


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
        """The (cached) permutation of an epoch, on the device."""
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


class StepStreams:
    """Named generators of one step (`objectives.StepGenerators`): each call returns the stream's generator
    freshly seeded by (seed, step, name), on the CPU or on the training device."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self._device, self.step = seed, device, 0
        self._generators: dict[tuple[str, str], torch.Generator] = {}

    def at(self, step: int) -> "StepStreams":
        """These streams, set to a step."""
        self.step = step
        return self

    def _seeded(self, where: str, name: str, device: torch.device) -> torch.Generator:
        """The cached generator of (where, name), reseeded for the current step."""
        if (where, name) not in self._generators:
            self._generators[where, name] = torch.Generator(device=device)
        return self._generators[where, name].manual_seed(step_seed(self.seed, self.step, name))

    def cpu(self, name: str) -> torch.Generator:
        """The CPU generator of stream `name` at this step."""
        return self._seeded("cpu", name, torch.device("cpu"))

    def device(self, name: str) -> torch.Generator:
        """The training device's generator of stream `name` at this step."""
        return self._seeded("device", name, self._device)


class StepBatches:
    """Each step's global batch and the objective's draws for it, drawn as by one process; then this rank's
    slice of both."""

    def __init__(self, data: Data, config: TrainConfig, objective: Objective, device: torch.device,
                 world: World) -> None:
        if config.batch_size % world.size:
            raise ConfigError(f"batch_size {config.batch_size} cannot be split evenly over {world.size} processes; "
                              f"use a multiple of {world.size}")
        self.stream, self.device = data.stream, device
        where = torch.device("cpu") if self.stream is not None else device  # a stream is read on the host
        self.x = data.x.to(device)
        self.labels = None if data.labels is None else data.labels.to(where)
        self.batch_size, self.block_length = config.batch_size, config.block_length
        modality = modalities.get(data.kind)
        self.hflip = config.hflip and modality.mirrors
        self.order = None if modality.windows else DataOrder(len(data), config.batch_size, config.seed, where)
        self.streams = StepStreams(config.seed, device)
        self.objective, self.part = objective, world.split(config.batch_size)

    def get(self, step: int, model: nn.Module) -> tuple[Batch, Draws]:
        """(batch, draws) of this rank's slice of step's global batch."""
        streams = self.streams.at(step)
        if self.order is None:  # text: windows at random offsets, a pure function of (seed, step)
            batch = Batch(random_windows(self.x, self.block_length, self.batch_size, streams.cpu("windows")))
        else:
            idx = self.order.indices(step)
            labels = None if self.labels is None else self.labels[idx].to(self.device)
            x = self.x[idx] if self.stream is None else self.stream.batch(idx.tolist()).to(self.device)
            if self.hflip:  # a random half, mirrored: a pure function of (seed, step) like the data order
                flip = torch.rand(len(x), generator=streams.cpu("hflip")) < 0.5
                x = torch.where(flip.to(x.device).view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)
            batch = Batch(x, labels)
        draws = self.objective.draw(model, batch, streams)
        return batch[self.part], take(draws, self.part)
