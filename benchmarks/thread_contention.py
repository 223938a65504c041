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

    python benchmarks/thread_contention.py --preset digits --load-stops 60 [--steps 800] [--log-every 20]

runs the other case instead: one `--threads auto` run that starts beside the busy process, which is stopped
once the run's own clock passes 60 s; it prints every log window's images/s and says how many windows after the
load ended the run was back at the idle two-thread speed (measured first, in a run of its own). Target: one.
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
import time
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


def load_that_stops(args: argparse.Namespace) -> tuple[list[dict], float, list[str]]:
    """(log records, the run's elapsed seconds when the load was stopped, the run's thread messages) of one
    `--threads auto` run started beside a busy process that stops once the run's clock passes args.load_stops."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    time.sleep(1.0)  # the load is there when the run looks at the machine
    with tempfile.TemporaryDirectory() as out:
        log = Path(out) / "log.jsonl"
        command = [sys.executable, "-m", "rediffuse", "train", "--preset", args.preset, "--steps", str(args.steps),
                   "--log-every", str(args.log_every), "--threads", "auto", "--no-progress", "--device", "cpu",
                   "--checkpoint-every", str(10 * args.steps), "--out", out,
                   *(["--data", args.data] if args.data else [])]
        run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        stopped_at = None
        try:
            while run.poll() is None:
                records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
                if stopped_at is None and records and records[-1]["elapsed"] >= args.load_stops:
                    busy.kill()
                    stopped_at = records[-1]["elapsed"]
                time.sleep(0.2)
        finally:
            busy.kill()
            busy.wait()
        messages = [line for line in run.stderr.read().splitlines() if "thread" in line]
        records = [json.loads(line) for line in log.read_text().splitlines()]
    return records, stopped_at if stopped_at is not None else float("inf"), messages


def recovery_table(args: argparse.Namespace) -> str:
    """Each window's images/s in the run whose load stops, and the windows it took to reach the idle speed."""
    idle = train_rate(args.preset, args.data, 6 * args.log_every, args.log_every, "2", "default")
    records, stopped_at, messages = load_that_stops(args)
    after = [r for r in records if r["elapsed"] > stopped_at]
    back = next((i for i, r in enumerate(after) if r["samples_per_s"] >= 0.9 * idle), None)
    lines = [f"`{args.preset}` on {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), "
             f"`--threads auto`, a busy process stopped at {stopped_at:.1f} s of the run; idle 2-thread speed "
             f"{idle:.1f} images/s.", "", "| step | elapsed s | images/s | load |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['elapsed']:.1f} | {r['samples_per_s']:.1f} | "
              f"{'busy' if r['elapsed'] <= stopped_at else 'gone'} |" for r in records]
    verdict = "never" if back is None else f"in window {back + 1} after the load ended " \
        f"({after[back]['elapsed'] - stopped_at:.1f} s)"
    lines += ["", f"Back at >= 0.9x the idle 2-thread speed: {verdict}.", "", "Thread messages:", "",
              *[f"    {m}" for m in messages]]
    return "\n".join(lines) + "\n"


def table(args: argparse.Namespace, cells: dict[tuple[str, str], list[float]]) -> str:
    """The markdown table: median images/s idle and loaded per policy, and loaded / idle."""
    best_idle = max(statistics.median(cells[(spec, "idle")]) for spec in args.policies)
    lines = [f"`{args.preset}` on {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs), "
             f"{args.steps} steps per cell, {args.rounds} rounds, medians of the log windows:", "",
             "| threads | OMP_WAIT_POLICY or GOMP_SPINCOUNT | idle images/s | loaded images/s | loaded / idle "
             "| idle / best idle |",
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
    p.add_argument("--load-stops", type=float, default=None, metavar="S",
                   help="instead: one auto run whose busy neighbour stops at S seconds of the run")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    text = recovery_table(args) if args.load_stops is not None else table(args, measure(args))
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
