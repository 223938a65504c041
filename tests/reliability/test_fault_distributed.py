"""torchrun: 2 CPU processes (gloo) train the same mathematics as 1 process (same global batch, sigmas and
noise, gradients averaged by DDP), rank 0 logs and checkpoints, all ranks resume from one checkpoint, and
`sample` splits the batches over the ranks with results bit-equal to one process."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rediffuse import objectives
from rediffuse.cli import main
from rediffuse.distributed import World
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import build_data
from rediffuse.errors import ConfigError
from rediffuse.train import train
from rediffuse.train.batches import StepBatches
from rediffuse.train.clock import TEST_CLOCK_ENV

from reliability_common import TINY, cli, final, flags, log_records, max_abs_diff, run, torchrun

DDP = {**TINY, "steps": 20, "log_every": 5, "checkpoint_every": 10}
TOLERANCE = 1e-5  # float summation order differs (half batches, then an all-reduce); measured ~6e-8


def compare(one: Path, two: Path) -> dict[str, float]:
    """Max abs differences of logged losses and of final weights, EMA and optimizer between two runs."""
    a, b = log_records(one), log_records(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    diffs = {"loss": max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))}
    ca, cb = final(one), final(two)
    assert ca.step == cb.step
    diffs.update({part: max_abs_diff(ca, cb, part) for part in ("model", "ema", "optimizer")})
    print(f"\n1 vs 2 processes, max abs difference: {diffs}")
    return diffs


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    train(TrainConfig(out=str(out), **DDP))
    return out


def test_two_processes_train_like_one(tmp_path, one_process):
    out = tmp_path / "two"
    done = run(torchrun(2, "train", "--out", str(out), *flags(DDP)))
    assert done.stdout.count("finished at step 20") == 1  # rank 0 reports, rank 1 is silent
    assert all(v < TOLERANCE for v in compare(one_process, out).values())
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt-")) == ["ckpt-00000010", "ckpt-00000020"]

    samples = {}  # sampling: ranks split the batches, rank 0 gathers and writes
    for procs in (1, 2):
        dest = tmp_path / f"samples{procs}.npy"
        argv = ["sample", str(out), "-n", "150", "--batch-size", "40", "--steps", "6", "--out", str(dest)]
        if procs == 1:
            assert main(argv) == 0
        else:
            printed = run(torchrun(2, *argv)).stdout.split()
            assert printed.count(str(dest)) == 1
        samples[procs] = np.load(dest)
    assert samples[1].shape == (150, 2) and np.array_equal(samples[1], samples[2])


def test_two_process_distill_equals_one_process(tmp_path, one_process):
    """Consistency tuning (two forward calls per step, one under no_grad) through DDP: the same mathematics."""
    student = ["--steps", "10", "--checkpoint-every", "5", "--log-every", "5", "--ct-stage-steps", "4",
               "--no-progress"]
    assert main(["distill", str(one_process), "--out", str(tmp_path / "one"), *student]) == 0
    run(torchrun(2, "distill", str(one_process), "--out", str(tmp_path / "two"), *student))
    assert all(v < TOLERANCE for v in compare(tmp_path / "one", tmp_path / "two").values())


@pytest.mark.slow
def test_two_processes_resume_like_one(tmp_path, one_process):
    out = tmp_path / "two"
    run(torchrun(2, "train", "--out", str(out), *flags({**DDP, "steps": 10})))
    run(torchrun(2, "train", "--resume", "--out", str(out), *flags(DDP)))
    assert all(v < TOLERANCE for v in compare(one_process, out).values())


@pytest.mark.slow
def test_nan_on_one_rank_skips_the_step_on_all(tmp_path):
    """A NaN loss on rank 1 only (step 3): both ranks skip it (no divergence of the replicas)."""
    script = tmp_path / "poison.py"
    script.write_text(textwrap.dedent(f"""
        import math, os, sys
        from rediffuse.core import losses
        from rediffuse.config import TrainConfig
        from rediffuse.train import train
        real, calls = losses.denoising_loss, [0]
        def loss(*args, **kwargs):
            calls[0] += 1
            value = real(*args, **kwargs)
            return value * math.nan if calls[0] == 4 and os.environ["RANK"] == "1" else value
        losses.denoising_loss = loss
        train(TrainConfig(out=sys.argv[1], **{dict(DDP, log_every=1)!r}))
    """))
    out = tmp_path / "run"
    run(torchrun(2, str(out), script=str(script)))
    assert [r["skipped"] for r in log_records(out)] == [int(k == 3) for k in range(20)]


def test_agree_reads_alone_on_one_rank_and_only_at_agreement_steps_on_several():
    calls = []

    def read() -> float:
        calls.append(1)
        return 3.0

    assert World().agree(read, step=7, every=5) == 3.0 and len(calls) == 1  # one rank: every step, its own
    assert World(0, 2).agree(read, step=7, every=5, otherwise=1.5) == 1.5 and len(calls) == 1  # not read


def _gaussian(config: TrainConfig, data):
    """The objective of config and a freshly built model for data."""
    objective = objectives.get(config)
    spec = objective.spec(data)
    return objective, objective.model(spec, objective.build(spec))


def test_global_batch_must_split_evenly():
    data = build_data(TrainConfig(**{**TINY, "num_points": 64}))
    objective, _ = _gaussian(TrainConfig(**TINY), data)
    with pytest.raises(ConfigError, match="batch_size 64 cannot be split evenly over 3 processes"):
        StepBatches(data, TrainConfig(**TINY), objective, torch.device("cpu"), World(0, 3))


def test_ranks_slice_one_global_batch():
    data = build_data(TrainConfig(**{**TINY, "num_points": 64}))
    config = TrainConfig(**TINY)
    objective, model = _gaussian(config, data)
    whole = StepBatches(data, config, objective, torch.device("cpu"), World())
    parts = [StepBatches(data, config, objective, torch.device("cpu"), World(rank, 4)) for rank in range(4)]
    for step in (0, 7):
        batch, draws = whole.get(step, model)
        x0, sigma, noise = batch.x, draws["sigma"], draws["noise"]
        sliced = [(b.x, d["sigma"], d["noise"]) for b, d in (p.get(step, model) for p in parts)]
        for i, tensor in enumerate((x0, sigma, noise)):
            assert torch.equal(tensor, torch.cat([s[i] for s in sliced]))


@pytest.mark.slow
def test_two_process_eval_equals_one_process(tmp_path, monkeypatch):
    """`torchrun ... eval`: the ranks split the sample batches; samples and metrics equal one process's."""
    import json
    import shutil

    monkeypatch.setenv("REDIFFUSE_CACHE", str(tmp_path / "cache"))  # children inherit it
    one = tmp_path / "one"
    assert main(["demo", "--out", str(one), "--steps", "3"]) == 0
    two = tmp_path / "two"
    shutil.copytree(one, two)
    argv = ["-n", "80", "--batch-size", "20", "--steps", "3", "--metrics", "fd,prdc,acc"]
    assert main(["eval", str(one), *argv]) == 0  # trains and caches the classifier first
    run(torchrun(2, "eval", str(two), *argv))
    samples = [np.load(next((r / "eval").glob("samples-*.npz")))["samples"] for r in (one, two)]
    assert np.array_equal(samples[0], samples[1])
    reports = [json.loads((r / "eval" / "eval.json").read_text())["samples"] for r in (one, two)]
    assert reports[0] == pytest.approx(reports[1], rel=1e-9)


def test_two_processes_agree_on_time_budget_timed_checkpoints_and_cosine_lr(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_CLOCK_ENV, "0.05")  # the children's training clock: 0.05 s per reading
    out = tmp_path / "timed"
    config = {**TINY, "steps": 1_000_000, "log_every": 5, "checkpoint_every": 1_000_000, "minutes": 0.05,
              "checkpoint_minutes": 0.01, "keep_last": 100, "lr_schedule": "cosine"}
    done = run(torchrun(2, "train", "--out", str(out), *flags(config)))
    assert done.stdout.count("stopped at the time budget") == 1
    saved = sorted(p for p in out.iterdir() if p.name.startswith("ckpt-"))
    assert len(saved) >= 3  # the timed ones and the last; the ranks never disagreed (no hang, no error)
    records = log_records(out)
    assert records[-1]["step"] == final(out).step and records[-1]["lr"] < 0.2 * config.get("lr", 1e-3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RANK_PIDS = """
import os, sys
from pathlib import Path
Path(sys.argv[1]).joinpath(f"pid-{os.environ['RANK']}").write_text(str(os.getpid()))
from rediffuse.cli import main
raise SystemExit(main(sys.argv[2:]))
"""
KILL_LIMIT_S = 60  # the stated time: after one rank dies the whole job ends within this


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_then_it_resumes_with_one_then_two_processes(tmp_path, one_process):
    import os
    import signal
    import subprocess
    import time

    from reliability_common import env

    script = tmp_path / "ranks.py"
    script.write_text(RANK_PIDS)
    out = tmp_path / "run"
    long = {**DDP, "steps": 1_000_000, "checkpoint_every": 10, "keep_last": 100}
    job = subprocess.Popen(torchrun(2, str(tmp_path), "train", "--out", str(out), *flags(long), script=str(script)),
                           env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "ckpt-00000020" / "manifest.json").exists():
            assert time.monotonic() < deadline and job.poll() is None, "the 2-process run did not start"
            time.sleep(0.1)
        killed = time.monotonic()
        os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGKILL)
        code = job.wait(timeout=KILL_LIMIT_S)
        ended = time.monotonic() - killed
    finally:
        job.kill()
    output = job.stdout.read()
    assert code != 0 and ended < KILL_LIMIT_S, output
    rank0 = int((tmp_path / "pid-0").read_text())
    assert not Path(f"/proc/{rank0}").exists() or "zombie" in Path(f"/proc/{rank0}/status").read_text()
    print(f"\nrank 1 SIGKILLed: the job ended {ended:.1f} s later with exit code {code}")
    newest = final(out).step  # the kill left a verified checkpoint behind
    assert newest >= 20
    run(cli("train", "--resume", "--out", str(out), *flags({**DDP, "steps": newest + 5})))
    run(torchrun(2, "train", "--resume", "--out", str(out), *flags({**DDP, "steps": newest + 10})))
    assert final(out).step == newest + 10


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_like_one_process(tmp_path, one_process):
    import subprocess

    from reliability_common import env

    out, port = tmp_path / "two-nodes", _free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes",
            "-m", "rediffuse", "train", "--out", str(out), *flags(DDP)]
    launchers = [subprocess.Popen(node, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], outputs
    assert sum(o.count("finished at step 20") for o in outputs) == 1  # one rank 0 in all
    assert all(v < TOLERANCE for v in compare(one_process, out).values())


@pytest.mark.slow
def test_two_processes_train_a_conditional_table_run_like_one(tmp_path):
    """A table run (numbers' noise, cells' masks, label dropout, all sliced per rank) through DDP: the same
    mathematics as one process."""
    config = dict(data="table:iris@train", objective="table", target="target", conditional=True, batch_size=32,
                  steps=10, log_every=5, checkpoint_every=10, warmup_steps=2, progress=False,
                  net_kwargs={"hidden": 32, "depth": 2, "emb_dim": 16})
    train(TrainConfig(out=str(tmp_path / "one"), **config))
    run(torchrun(2, "train", "--out", str(tmp_path / "two"), *flags(config)))
    assert all(v < TOLERANCE for v in compare(tmp_path / "one", tmp_path / "two").values())


@pytest.mark.slow
def test_two_processes_train_a_block_diffusion_run_like_one(tmp_path):
    """Block diffusion (per-block times and masks of the 2L-token pass, sliced per rank) through DDP."""
    from helpers import markov_text

    text, _ = markov_text(tmp_path / "m.txt", n=3000)
    config = dict(data=f"text:{text}@train", objective="block", block_tokens=4, mask_rate_min=0.3,
                  mask_rate_max=0.8, block_length=16, batch_size=8, steps=6, log_every=3, checkpoint_every=6,
                  warmup_steps=2, progress=False, net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    train(TrainConfig(out=str(tmp_path / "one"), **config))
    run(torchrun(2, "train", "--out", str(tmp_path / "two"), *flags(config)))
    assert all(v < TOLERANCE for v in compare(tmp_path / "one", tmp_path / "two").values())
