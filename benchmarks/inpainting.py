"""How right each inpainting method is: on exact Gaussian mixtures with their exact denoisers, and on held-out
MNIST digits with a trained run against diffusers' RePaint.

## Exact mixtures (the default)

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

## MNIST (`--run RUN --data MNIST`): ours against diffusers' RePaintScheduler on the same network

    python benchmarks/inpainting.py --run RUN --data /work/shared/data/mnist [--n 500] [--nfe 100] [--ceiling]

With --ceiling it measures instead how far the known pixels alone decide the digit: completions pasted from the
nearest training digit, and a calibrated SVC's mean probability of the true class given the known pixels (an exact
posterior sampler's expected accuracy, were the scoring classifier always right).

The run is a conditional `--preset mnist-fast` run, edited without a class, so the completion must come from
the known pixels alone: SMC spreads its particles over the classes (the default) or, as every other method does,
uses the null class. The masks: the lower half (rows 14-27) and a centre square
(rows and columns 7-20). Each completed digit is scored by:
- class accuracy against its true label, by the project's MNIST classifier;
- FD against the held-out digits on that classifier's features.
The table also gives seconds per image; run it alone.

The peer is diffusers' RePaintScheduler (Lugmayr et al. 2022) driving our denoiser as an eps-model of its VP
schedule: for timestep t with alpha_bar, x_ve = x_vp / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar),
eps = (x_ve - D(x_ve, sigma)) / sigma. Its mask is 1 on the known pixels. Our RePaint and the peer share
jump 5 and resample 2 (jump 10 and resample 10, diffusers' default, would leave 10 levels for 100
evaluations).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import rediffuse
from rediffuse.core import schedules
from rediffuse.data.images import load_images
from rediffuse.evaluation.features import extract_features, load_or_train_classifier
from rediffuse.evaluation.features.classifier import classify
from rediffuse.evaluation.metrics import frechet_distance
from rediffuse.samplers import sample
from rediffuse.samplers.inpainting import Reconstruction, Replacement, repaint, repaint_evaluations, smc
from rediffuse.truth import analytic
from rediffuse.truth.posterior import conditional

f64 = torch.float64


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


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
        sig, scale = schedule.sigmas(steps), float(m.sample(20_000, seeded(5)).std())
        wrapped = Reconstruction(m.denoiser(), known, missing, torch.randn(known.shape, generator=g, dtype=f64),
                                 scale)
        return sample(wrapped, sig[0] * torch.randn(known.shape, generator=g, dtype=f64), sig, "heun")

    levels = max((s for s in range(2, budget + 1) if repaint_evaluations(s, 5, 4) <= budget), default=None)

    def repainted(m, known, missing, g):
        sig = schedule.sigmas(levels)
        return repaint(m.denoiser(), sig[0] * torch.randn(known.shape, generator=g, dtype=f64), known, missing,
                       sig, jump=5, resample=4, generator=g)

    def sequential(particles, twisted=False):
        def run(m, known, missing, g):
            sig, scale = schedule.sigmas(budget // particles), float(m.sample(20_000, seeded(5)).std())
            return smc(m.denoiser(), sig[0] * torch.randn(known.shape, generator=g, dtype=f64), known, missing, sig,
                       particles=particles, generator=g, twist=scale if twisted else None)
        return run

    found = {"replacement (Euler)": replacement, "reconstruction guidance (Heun)": reconstruction,
             "RePaint (jump 5, resample 4)": repainted if levels else None}
    for particles in (4, 16):
        for twisted in (False, True):
            name = f"{'twisted ' if twisted else ''}SMC, {particles} particles"
            found[name] = sequential(particles, twisted) if budget // particles >= 2 else None
    return found


def mixture_table(args: argparse.Namespace) -> list[str]:
    """The rows of the exact-mixture table."""
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
    return lines


def masks() -> dict[str, Tensor]:
    """name -> [1, 28, 28] mask, True where redrawn."""
    lower, square = torch.zeros(1, 28, 28, dtype=torch.bool), torch.zeros(1, 28, 28, dtype=torch.bool)
    lower[:, 14:] = True
    square[:, 7:21, 7:21] = True
    return {"lower half": lower, "centre square": square}


def peer_repaint(run: rediffuse.Run, x: Tensor, missing: Tensor, steps: int, jump: int, resample: int,
                 seed: int) -> tuple[Tensor, int]:
    """diffusers' RePaint with our denoiser as its eps-model (null class), one generator for the batch; (the
    completed digits, network evaluations per digit)."""
    from diffusers import RePaintScheduler

    scheduler = RePaintScheduler(num_train_timesteps=1000, beta_schedule="linear", eta=1.0, clip_sample=True)
    scheduler.set_timesteps(steps, jump_length=jump, jump_n_sample=resample)
    model, null = run.model, torch.full((len(x),), run.num_classes or 0, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    sample, known = torch.randn(x.shape, generator=g), (~missing).float().expand_as(x)
    t_last, calls = scheduler.timesteps[0] + 1, 0
    with torch.no_grad():
        for t in scheduler.timesteps:
            if t < t_last:
                calls += 1
                ab = float(scheduler.alphas_cumprod[t])
                sigma = ((1 - ab) / ab) ** 0.5
                x_ve = sample / ab**0.5
                d = model(x_ve, sigma, null if run.num_classes else None)
                sample = scheduler.step((x_ve - d) / sigma, t, sample, x, known, generator=g).prev_sample
            else:
                sample = scheduler.undo_step(sample, t_last, g)
            t_last = t
    return torch.where(missing, sample.clamp(-1, 1), x), calls


def edited(run: rediffuse.Run, x: Tensor, mask: Tensor, seed: int, twist: bool = True, marginal: bool = True,
           **options) -> Tensor:
    """run.edit(x, mask, ...) with SMC's twist and class marginalisation as chosen."""
    request, edit = run.edit_requests(x, mask, options.pop("method"), 1.0, None, options.pop("sampler", None),
                                      options.pop("steps"), 1.0, seed, options.pop("particles", None),
                                      options.pop("jump", 10), options.pop("resample", 10), 250, "cpu")
    edit = dataclasses.replace(edit, twist=twist, marginal=marginal)
    return run.modality.edit(run.model, run.spec, request, edit).samples


def mnist_table(args: argparse.Namespace) -> list[str]:
    """The rows of the MNIST table."""
    torch.manual_seed(args.seed)
    run = rediffuse.load(args.run, device="cpu")
    held = load_images(f"mnist:{args.data}@heldout")
    x, labels = held.images.float()[: args.n], held.labels[: args.n]
    classifier, _ = load_or_train_classifier("mnist", args.data)
    real = extract_features(classifier, held.images.float())
    levels = max(s for s in range(2, args.nfe + 1) if repaint_evaluations(s, 5, 2) <= args.nfe)
    ours = {"smc (twisted, 10 particles over the classes)": (dict(method="smc", particles=10, steps=args.nfe // 10),
                                                             args.nfe // 10 * 10),
            "smc (twisted, 4 particles, null class)": (dict(method="smc", particles=4, steps=args.nfe // 4,
                                                            marginal=False), args.nfe // 4 * 4),
            "smc (SMCDiff, 4 particles, null class)": (dict(method="smc", particles=4, steps=args.nfe // 4,
                                                            marginal=False, twist=False), args.nfe // 4 * 4),
            "replace (Euler)": (dict(method="replace", sampler="euler", steps=args.nfe), args.nfe),
            "replace (Heun)": (dict(method="replace", sampler="heun", steps=(args.nfe + 1) // 2),
                               2 * ((args.nfe + 1) // 2) - 1),
            "repaint (jump 5, resample 2)": (dict(method="repaint", jump=5, resample=2, steps=levels),
                                             repaint_evaluations(levels, 5, 2))}
    lines = ["| mask | method | NFE | class accuracy | FD | s / image |", "|---|---|---|---|---|---|"]
    for mask_name, mask in masks().items():
        for name, (options, nfe) in [*ours.items(), ("diffusers RePaint (jump 5, resample 2)", (None, 0))]:
            started = time.perf_counter()
            if options is None:
                done, nfe = peer_repaint(run, x, mask, levels, 5, 2, args.seed)
            else:
                done = edited(run, x, mask, args.seed, **options)
            seconds = (time.perf_counter() - started) / len(x)
            accuracy = float((classify(classifier, done) == labels).float().mean())
            fd = frechet_distance(extract_features(classifier, done), real)
            lines.append(f"| {mask_name} | {name} | {nfe} | {accuracy:.3f} | {fd:.2f} | {seconds:.4f} |")
            print(lines[-1], flush=True)
    return lines


def ceiling_lines(args: argparse.Namespace) -> list[str]:
    """How often the known pixels alone can decide the digit: the classifier's accuracy on completions pasted from
    the nearest training digit (by the known pixels), and a calibrated SVC's mean probability of the true class
    given the known pixels (what an exact posterior sampler would score if the classifier were always right)."""
    from sklearn.svm import SVC

    train, held = (load_images(f"mnist:{args.data}@{part}") for part in ("train", "heldout"))
    x, labels = held.images.float()[: args.n], held.labels[: args.n]
    classifier, _ = load_or_train_classifier("mnist", args.data)
    lines = ["| mask | nearest-neighbour paste: accuracy | SVC on the known pixels: accuracy | "
             "mean p(true class) |", "|---|---|---|---|"]
    for mask_name, mask in masks().items():
        keep = (~mask).float()
        known_train, known_held = (train.images.float() * keep).flatten(1), (x * keep).flatten(1)
        nearest = torch.cdist(known_held, known_train).argmin(1)
        pasted = torch.where(mask, train.images.float()[nearest], x)
        paste = float((classify(classifier, pasted) == labels).float().mean())
        svc = SVC(C=5, probability=True, random_state=0).fit(known_train.numpy(), train.labels.numpy())
        probs = svc.predict_proba(known_held.numpy())
        svc_acc = float((probs.argmax(1) == labels.numpy()).mean())
        mean_p = float(probs[range(len(labels)), labels.numpy()].mean())
        lines.append(f"| {mask_name} | {paste:.3f} | {svc_acc:.3f} | {mean_p:.3f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="edits per case (default 2000), or digits per mask (500)")
    p.add_argument("--budgets", type=int, nargs="+", default=[20, 80, 320],
                   help="mixtures: network evaluations per edit")
    p.add_argument("--run", type=Path, default=None, help="MNIST: the trained run (selects the MNIST table)")
    p.add_argument("--data", type=Path, default=None, help="MNIST: the folder of the t10k IDX files")
    p.add_argument("--nfe", type=int, default=100, help="MNIST: network evaluations per digit (default 100)")
    p.add_argument("--ceiling", action="store_true", help="MNIST: how often the known pixels decide the digit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    if (args.run is None) != (args.data is None):
        p.error("the MNIST table needs both --run and --data")
    args.n = args.n or (2000 if args.run is None else 500)
    if args.ceiling and args.data is None:
        p.error("--ceiling needs --data (and --run)")
    rows = mixture_table(args) if args.run is None else ceiling_lines(args) if args.ceiling else mnist_table(args)
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
