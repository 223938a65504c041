"""What `--compile` (torch.compile) gives the training step here: eager vs compiled, same model, same batches.

The `mnist-fast` network (UNet2D, 16/64/64 channels, attention at 7 x 7, class-conditional) on 28 x 28 inputs
and the `digits` network on 8 x 8, each trained with the loop's own step (`rediffuse.train.loop.train_step`,
EDM loss, AdamW) on the same pre-drawn batches. The compiled model pays its compilation in the first steps
(reported separately); then both are timed in alternating blocks in one process, and the table gives images/s
and the compiled / eager ratio. Run it alone on the machine.

    python benchmarks/compile_speed.py [--steps 30] [--rounds 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rediffuse import objectives
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import Data
from rediffuse.distributed import SINGLE
from rediffuse.presets import preset
from rediffuse.train.batches import StepBatches
from rediffuse.train.loop import train_step
from rediffuse.train.state import new_state

CASES = {"mnist-fast (28 x 28)": ("mnist-fast", 28, 64), "digits (8 x 8)": ("digits", 8, 128)}


def setup(name: str, size: int, batch: int, compiled: bool):
    """(state, objective, batches, config) of a preset's network on random labelled images."""
    values = preset(name)
    values.update(data="unused", out="unused", batch_size=batch, compile=compiled, minutes=None, steps=10**6)
    config = TrainConfig.from_dict(values)
    g = torch.Generator().manual_seed(0)
    data = Data(torch.rand(2048, 1, size, size, generator=g) * 2 - 1, torch.arange(2048) % 10, "images")
    objective = objectives.get(config)
    state = new_state(config, objective, objective.spec(data), torch.device("cpu"))
    return state, objective, StepBatches(data, config, objective, torch.device("cpu"), SINGLE), config


def run_steps(case: tuple, start: int, steps: int) -> float:
    """Seconds for `steps` training steps from step `start`."""
    state, objective, batches, config = case
    begin = time.perf_counter()
    for step in range(start, start + steps):
        batch, draws = batches.get(step, state.model)
        train_step(state, objective, batch, draws, 1e-4, config)
    return time.perf_counter() - begin


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="steps per timed block (default: 30)")
    p.add_argument("--rounds", type=int, default=4, help="alternating blocks per model (default: 4)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["| network | batch | eager img/s | compiled img/s | compiled / eager | compile time (s) |",
             "|---|---|---|---|---|---|"]
    for label, (name, size, batch) in CASES.items():
        eager, compiled = setup(name, size, batch, False), setup(name, size, batch, True)
        run_steps(eager, 0, 3)
        began = time.perf_counter()
        run_steps(compiled, 0, 3)  # compiles (forward and backward)
        first = time.perf_counter() - began
        times = {"eager": [], "compiled": []}
        for r in range(args.rounds):
            order = [("eager", eager), ("compiled", compiled)][:: 1 if r % 2 == 0 else -1]
            for key, case in order:
                times[key].append(run_steps(case, 3 + r * args.steps, args.steps))
        rate = {k: batch * args.steps / statistics.median(v) for k, v in times.items()}
        lines.append(f"| {label} | {batch} | {rate['eager']:.0f} | {rate['compiled']:.0f} | "
                     f"{rate['compiled'] / rate['eager']:.2f} | {first:.0f} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
