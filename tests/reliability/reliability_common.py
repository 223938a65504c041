"""Shared pieces of the fault tests: a tiny points run, subprocess launchers, and state comparisons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rediffuse import checkpoint

# A tiny MLP on 2-D points: a step takes about a millisecond.
TINY: dict[str, Any] = dict(data="8gaussians", num_points=512, batch_size=64, warmup_steps=5, ema_decay=0.9,
                            progress=False, net="mlp", net_kwargs={"hidden": 32, "depth": 2, "emb_dim": 16})


def flags(config: dict[str, Any]) -> list[str]:
    """`rediffuse train` flags for config keys (--key value, JSON for tables, --[no-]key for booleans)."""
    out = []
    for key, value in config.items():
        name = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(name if value else "--no-" + key.replace("_", "-"))
        else:
            out += [name, json.dumps(value) if isinstance(value, dict) else str(value)]
    return out


def env() -> dict[str, str]:
    """The environment of a child process: one intra-op thread (bit-equal with the test process, no contention)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str) -> list[str]:
    """argv of `python -m rediffuse ...` in this interpreter."""
    return [sys.executable, "-m", "rediffuse", *args]


def torchrun(nproc: int, *args: str, script: str | None = None) -> list[str]:
    """argv of `torchrun --standalone --nproc_per_node=nproc -m rediffuse ...` (or of a script instead)."""
    target = ["-m", "rediffuse"] if script is None else [script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *target, *args]


def run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run argv to completion, capturing its output; fail the test with that output if it exits non-zero."""
    done = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def final(run_dir: Path) -> checkpoint.Checkpoint:
    """The newest checkpoint of a run, loaded with its hashes verified."""
    path = checkpoint.latest(run_dir)
    assert path is not None, f"{run_dir} holds no complete checkpoint"
    return checkpoint.load(path)


def max_abs_diff(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint, part: str) -> float:
    """The largest absolute difference between two checkpoints' tensors of one part (same names required)."""
    assert a.tensors[part].keys() == b.tensors[part].keys(), part
    return max(float((v.double() - b.tensors[part][k].double()).abs().max()) if v.numel() else 0.0
               for k, v in a.tensors[part].items())


def assert_bit_equal(a: checkpoint.Checkpoint, b: checkpoint.Checkpoint,
                     parts: tuple[str, ...] = ("model", "ema", "optimizer")) -> None:
    """Two checkpoints hold the same step and bit-identical tensors in parts."""
    assert a.step == b.step
    for part in parts:
        assert a.tensors[part].keys() == b.tensors[part].keys(), part
        for key, value in a.tensors[part].items():
            assert torch.equal(value, b.tensors[part][key]), f"{part}.{key} differs"


def log_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl."""
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
