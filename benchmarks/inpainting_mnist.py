"""Inpainting held-out MNIST digits with a trained run: ours (each method) against diffusers' RePaintScheduler
driving the same network, at equal network evaluations.

    python benchmarks/inpainting_mnist.py --run RUN --data /work/shared/data/mnist [--n 500] [--nfe 100]

The run is an unconditional-or-conditional `--preset mnist-fast` run, edited with its null class, so the
completion must come from the known pixels alone. The masks: the lower half (rows 14-27) and a centre square
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
import time
from pathlib import Path

import torch
from torch import Tensor

import rediffuse
from rediffuse.data.images import load_images
from rediffuse.evaluation.features import extract_features, load_or_train_classifier
from rediffuse.evaluation.features.classifier import classify
from rediffuse.evaluation.metrics import frechet_distance
from rediffuse.samplers.inpainting import repaint_evaluations


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the MNIST folder (t10k IDX files)")
    p.add_argument("--n", type=int, default=500, help="held-out digits per mask (default 500)")
    p.add_argument("--nfe", type=int, default=100, help="network evaluations per digit (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    run = rediffuse.load(args.run, device="cpu")
    held = load_images(f"mnist:{args.data}@heldout")
    x, labels = held.images.float()[: args.n], held.labels[: args.n]
    classifier, _ = load_or_train_classifier("mnist", args.data)
    real = extract_features(classifier, held.images.float())
    levels = max(s for s in range(2, args.nfe + 1) if repaint_evaluations(s, 5, 2) <= args.nfe)
    ours = {"smc (4 particles)": (dict(method="smc", particles=4, steps=args.nfe // 4), args.nfe // 4 * 4),
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
                done = run.edit(x, mask, seed=args.seed, batch_size=250, **options)
            seconds = (time.perf_counter() - started) / len(x)
            accuracy = float((classify(classifier, done) == labels).float().mean())
            fd = frechet_distance(extract_features(classifier, done), real)
            lines.append(f"| {mask_name} | {name} | {nfe} | {accuracy:.3f} | {fd:.2f} | {seconds:.4f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
