"""Training speed by CPU-thread policy, on an idle machine and beside one other CPU-bound process.

Each cell trains a preset for a few dozen steps in a fresh `rediffuse train` process with one thread policy
(the thread count and OpenMP's wait policy, which the OpenMP runtime reads when it loads) and reports the
median images/s of its log windows after the first. "loaded" runs a pure-Python busy loop beside it, the
stand-in for the compile, browser or second job that a laptop always has. The cells alternate policies within
a round and rounds reverse the order, so slow drift of the machine falls on every policy alike. Run it alone.

    python benchmarks/thread_contention.py --preset digits [--data digits] [--steps 60] [--log-every 10]
        [--rounds 2] [--policies 2:ACTIVE 2:PASSIVE 2:default 1:default 2:10000] [--out table.md]

A numeric POLICY is libgomp's GOMP_SPINCOUNT (how long an idle thread spins before it sleeps; PyTorch's CPU
wheels use libgomp).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUSY = "while True: pass"


def train_rate(preset: str, data: str | None, steps: int, log_every: int, threads: str, policy: str) -> float:
    """Median images/s of one short training run's log windows, the first (warm-up) window dropped."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.isdigit():  # libgomp's spin count before a waiting thread sleeps (its default: 300000)
        env["GOMP_SPINCOUNT"] = policy
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "rediffuse", "train", "--preset", preset, "--steps", str(steps),
                   "--log-every", str(log_every), "--threads", threads, "--no-progress", "--device", "cpu",
                   "--checkpoint-every", str(10 * steps), "--out", out, *(["--data", data] if data else [])]
        subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r][1:]
    return statistics.median(rates)


def measure(args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    """images/s per (policy, load) over the rounds."""
    policies = list(args.policies)
    cells: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = policies if round_ % 2 == 0 else policies[::-1]
        for load in ("idle", "loaded"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "loaded" else None
            try:
                for spec in order:
                    threads, policy = spec.split(":")
                    rate = train_rate(args.preset, args.data, args.steps, args.log_every, threads, policy)
                    cells.setdefault((spec, load), []).append(rate)
                    print(f"round {round_ + 1} {load:6s} threads {threads} policy {policy:7s} "
                          f"{rate:7.1f} images/s", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    return cells


def table(args: argparse.Namespace, cells: dict[tuple[str, str], list[float]]) -> str:
    """The markdown table: median images/s idle and loaded per policy, and loaded / idle."""
    best_idle = max(statistics.median(cells[(spec, "idle")]) for spec in args.policies)
    lines = [f"`{args.preset}` on {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), "
             f"{args.steps} steps per cell, {args.rounds} rounds, medians of the log windows:", "",
             "| threads | OMP_WAIT_POLICY or GOMP_SPINCOUNT | idle images/s | loaded images/s | loaded / idle | idle / best idle |",
             "|---|---|---|---|---|---|"]
    for spec in args.policies:
        threads, policy = spec.split(":")
        idle, loaded = (statistics.median(cells[(spec, load)]) for load in ("idle", "loaded"))
        lines.append(f"| {threads} | {policy} | {idle:.1f} | {loaded:.1f} | {loaded / idle:.2f} | "
                     f"{idle / best_idle:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="digits")
    p.add_argument("--data", default=None, help="data spec (default: the preset's)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--policies", nargs="+", default=["2:ACTIVE", "2:PASSIVE", "2:default", "1:default"],
                   metavar="THREADS:POLICY",
                   help="POLICY: OMP_WAIT_POLICY ACTIVE or PASSIVE, default (unset), or a number: GOMP_SPINCOUNT")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    text = table(args, measure(args))
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
