"""How right each inpainting method is, on exact Gaussian mixtures with their exact denoisers.

The truth is the closed-form posterior of the missing coordinates (`rediffuse.truth.posterior`). Each method
edits one input `--n` times at a budget of network evaluations per edit. Two figures:
- TV: the total variation between the components the edits fall in and the posterior's component weights.
- SW: the sliced 1-Wasserstein distance between the edits' missing part and exact posterior draws (64
  directions).
The floor is exact posterior draws against other exact draws.

    python benchmarks/inpainting.py [--n 2000] [--budgets 20 80 320] [--out table.md]

Cases: ring8 with its x coordinate known (x = 2.83: two likely modes), and mix16d with 8 of 16 coordinates
known. Methods:
- replacement with Euler at budget steps;
- reconstruction guidance with Heun at budget / 2 steps (plus as many backward passes);
- RePaint with jump 5 and resample 4 at the levels that fit the budget;
- SMC with 4 and with 16 particles at budget / particles steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch

from rediffuse.core import schedules
from rediffuse.samplers import sample
from rediffuse.samplers.inpainting import Reconstruction, Replacement, repaint, repaint_evaluations, smc
from rediffuse.truth import analytic
from rediffuse.truth.posterior import conditional

f64 = torch.float64


def cases() -> dict[str, tuple[analytic.GaussianMixture, torch.Tensor, torch.Tensor]]:
    """name -> (mixture, the known point, the missing coordinates)."""
    mix16 = analytic.preset("mix16d")
    return {"ring8": (analytic.ring(), torch.tensor([2.83, 0.0], dtype=f64), torch.tensor([False, True])),
            "mix16d": (mix16, mix16.sample(1, torch.Generator().manual_seed(3))[0], torch.arange(16) >= 8)}


def scores(mixture, edits, post, exact, missing) -> tuple[float, float]:
    """(TV of component weights, sliced W1 of the missing part) of edits against the posterior."""
    hist = torch.bincount(mixture.component(edits), minlength=len(mixture.weights)).double() / len(edits)
    tv = 0.5 * float((hist - post.weights[0]).abs().sum())
    dirs = torch.randn(64, int(missing.sum()), generator=torch.Generator().manual_seed(9), dtype=f64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    proj = lambda v: (v @ dirs.T).sort(0).values  # noqa: E731
    return tv, float((proj(edits[:, missing]) - proj(exact)).abs().mean())


def methods(budget: int) -> dict[str, Callable]:
    """name -> edit(mixture, known, missing, generator) at `budget` evaluations (None where it does not fit)."""
    schedule = schedules.get("edm")

    def replacement(m, known, missing, g, steps=budget):
        sig = schedule.sigmas(steps)
        wrapped = Replacement(m.denoiser(), known, missing, torch.randn(known.shape, generator=g, dtype=f64))
        return sample(wrapped, sig[0] * torch.randn(known.shape, generator=g, dtype=f64), sig, "euler")

    def reconstruction(m, known, missing, g, steps=max(budget // 2, 2)):
        sig, scale = schedule.sigmas(steps), float(m.sample(20_000, torch.Generator().manual_seed(5)).std())
        wrapped = Reconstruction(m.denoiser(), known, missing, torch.randn(known.shape, generator=g, dtype=f64),
                                 scale)
        return sample(wrapped, sig[0] * torch.randn(known.shape, generator=g, dtype=f64), sig, "heun")

    levels = max((s for s in range(2, budget + 1) if repaint_evaluations(s, 5, 4) <= budget), default=None)

    def repainted(m, known, missing, g):
        sig = schedule.sigmas(levels)
        return repaint(m.denoiser(), sig[0] * torch.randn(known.shape, generator=g, dtype=f64), known, missing,
                       sig, jump=5, resample=4, generator=g)

    def sequential(particles):
        def run(m, known, missing, g):
            sig = schedule.sigmas(budget // particles)
            return smc(m.denoiser(), sig[0] * torch.randn(known.shape, generator=g, dtype=f64), known, missing, sig,
                       particles=particles, generator=g)
        return run

    found = {"replacement (Euler)": replacement, "reconstruction guidance (Heun)": reconstruction,
             "RePaint (jump 5, resample 4)": repainted if levels else None}
    for particles in (4, 16):
        found[f"SMC, {particles} particles"] = sequential(particles) if budget // particles >= 2 else None
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="edits per case (default 2000)")
    p.add_argument("--budgets", type=int, nargs="+", default=[20, 80, 320], help="network evaluations per edit")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    lines = ["| case | method | evaluations | TV | SW | seconds |", "|---|---|---|---|---|---|"]
    for name, (mixture, point, missing) in cases().items():
        post = conditional(mixture, point[None], missing)
        exact = post.sample(args.n, torch.Generator().manual_seed(1))[0]
        floor_edits = point.expand(args.n, -1).clone()
        floor_edits[:, missing] = post.sample(args.n, torch.Generator().manual_seed(7))[0]
        tv, sw = scores(mixture, floor_edits, post, exact, missing)
        lines.append(f"| {name} | exact posterior draws (floor) | - | {tv:.4f} | {sw:.4f} | - |")
        for budget in args.budgets:
            for method, edit in methods(budget).items():
                if edit is None:
                    continue
                started = time.perf_counter()
                edits = edit(mixture, point.expand(args.n, -1).clone(), missing, torch.Generator().manual_seed(0))
                seconds = time.perf_counter() - started
                tv, sw = scores(mixture, torch.where(missing, edits, point), post, exact, missing)
                lines.append(f"| {name} | {method} | {budget} | {tv:.4f} | {sw:.4f} | {seconds:.2f} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
