"""Time to quality on MNIST: our `mnist-fast` recipe vs the standard diffusers recipe, same CPU wall budget.

Both train class-conditional models on the project's MNIST split (the 8,000 images of the MNIST test file
whose index % 5 != 0; the 2,000 with index % 5 == 0 are held out) for the same wall-clock budget, in one
process, one after the other, with the same thread count. Then each draws 1,000 samples (100 per class,
no guidance) and the project's MNIST classifier scores them:

- class accuracy: the share of samples the classifier labels as the class they were drawn for;
- FD: the Frechet distance between classifier features (128-D) of the 1,000 samples and of the 2,000
  held-out images; the floor is the same FD for 1,000 real training images (a perfect model's value).

The peer (diffusers): UNet2DModel with the Hugging Face diffusion-models course's MNIST layout widened to
block_out_channels (32, 64, 96) (2.69M parameters; DownBlock2D / AttnDownBlock2D / AttnDownBlock2D),
class labels through num_class_embeds, DDPMScheduler (linear betas, T = 1000), eps-prediction MSE,
AdamW lr 5e-4 after 500 warmup steps (betas 0.95/0.999, weight decay 1e-6, as diffusers'
train_unconditional.py), EMAModel (max decay 0.9999, warmup power 3/4), batch 64. It samples with
DPMSolverMultistepScheduler (DPM-Solver++ 2M) and `--peer-steps` steps, what a careful diffusers user picks.

Ours: `rediffuse train --preset mnist-fast`, sampled as the preset says. The curve evaluates our run's
checkpoints every `--curve-every` minutes (the same run and learning-rate schedule, not shorter runs).

    python benchmarks/time_to_quality.py [--minutes 15] [--curve-every 5] [--data /work/shared/data/mnist]
        [--out .bench/time_to_quality] [--threads 2] [--n 1000] [--skip-peer]
    python benchmarks/time_to_quality.py --score RUN --guidance 1 1.25     # score a trained run, no training
    python benchmarks/time_to_quality.py --minutes 0.5 --curve-every 0 --n 100   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import rediffuse
from rediffuse import checkpoint, viz
from rediffuse.data.images import load_images
from rediffuse.evaluation.features import extract_features, load_or_train_classifier
from rediffuse.evaluation.features.classifier import classify
from rediffuse.evaluation.features.pixels import fit_pixels
from rediffuse.evaluation.metrics import frechet_distance, prdc
from rediffuse.presets import SAMPLING, preset
from rediffuse.config import TrainConfig
from rediffuse.train import train

PEER_UNET = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=(32, 64, 96),
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=10)
PEER_TRAIN = dict(batch_size=64, lr=5e-4, warmup=500, betas=(0.95, 0.999), weight_decay=1e-6, ema_max_decay=0.9999)


def class_labels(n: int, num_classes: int = 10) -> Tensor:
    """n class-balanced labels, 0, 1, ..., 9, 0, 1, ..."""
    return torch.arange(n) % num_classes


# ------------------------------------------------------------------------------------------- scoring


class Scorer:
    """Class accuracy, FD and precision/recall (k = 5) against the held-out images on the project's MNIST classifier
    features, and the same on a second opinion of another family (`features.pixels`: nearest neighbours in the
    clean training images' principal components; its figures end in 2)."""

    def __init__(self, data: str, n: int, seed: int = 0) -> None:
        self.classifier, self.meta = load_or_train_classifier("mnist", data)
        held = load_images(f"mnist:{data}@heldout")
        train_set = load_images(f"mnist:{data}@train")
        train_x = train_set.images.float()
        self.second = fit_pixels(train_x, train_set.labels, (held.images.float(), held.labels))
        self.heldout = extract_features(self.classifier, held.images.float())
        self.heldout2 = self.second.features(held.images.float())
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:n]
        self.real = self._figures(train_x[pick], train_set.labels[pick])  # real training images: the floor
        self.floor, self.floor2 = self.real["fd"], self.real["fd2"]

    def fd(self, images: Tensor) -> float:
        """FD between the features of images and of the held-out set."""
        return frechet_distance(extract_features(self.classifier, images), self.heldout)

    def _figures(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        feats, feats2 = extract_features(self.classifier, images), self.second.features(images)
        first, second = prdc(self.heldout, feats, k=5), prdc(self.heldout2, feats2, k=5)
        return {"accuracy": float((classify(self.classifier, images) == labels).float().mean()),
                "fd": frechet_distance(feats, self.heldout), "precision": first["precision"],
                "recall": first["recall"], "accuracy2": self.second.accuracy(images, labels),
                "fd2": frechet_distance(feats2, self.heldout2), "precision2": second["precision"],
                "recall2": second["recall"]}

    def score(self, images: Tensor, labels: Tensor) -> dict[str, float]:
        """{'accuracy', 'fd', 'fd_ratio', 'precision', 'recall'} of class-conditional samples, and the same
        ending in 2 on the second opinion."""
        out = self._figures(images, labels)
        return {**out, "fd_ratio": out["fd"] / self.floor, "fd2_ratio": out["fd2"] / self.floor2}


# ---------------------------------------------------------------------------------------------- ours


def train_ours(data: str, out: Path, minutes: float, every: float | None) -> tuple[dict[str, Any], list[Path]]:
    """Train the mnist-fast preset for `minutes`, keeping a checkpoint every `every` minutes; (info, checkpoints)."""
    values = {**preset("mnist-fast"), "data": f"mnist:{data}@train", "out": str(out), "minutes": minutes,
              "progress": False, "checkpoint_minutes": every, "checkpoint_every": 10**9, "keep_last": 1000}
    config = TrainConfig.from_dict(values)
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    info = {"steps": result.step, "train_wall_s": wall, "images_per_s": result.step * config.batch_size / wall,
            "params": sum(p.numel() for p in rediffuse.load(out, device="cpu").model.parameters())}
    return info, checkpoint.list_checkpoints(out)


def sample_ours(ck: Path, n: int, batch_size: int = 500, guidance: float = 1.0) -> tuple[Tensor, dict[str, Any]]:
    """n class-balanced samples of a checkpoint, drawn as the preset's sampling settings say (at a guidance)."""
    run = rediffuse.load(ck, device="cpu")
    options = dict(SAMPLING["mnist-fast"])
    started = time.perf_counter()
    x = run.sample(n, class_labels(n), batch_size=batch_size, guidance=guidance, device="cpu", **options)
    return x, {"sampler": options["sampler"], "sample_steps": options["steps"], "guidance": guidance,
                            "sample_wall_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- peer


def train_peer(data: str, minutes: float, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """The standard diffusers recipe (see the module docstring) for `minutes` of wall time; (EMA unet, scheduler)."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    loaded = load_images(f"mnist:{data}@train")
    x_all, y_all = loaded.images.float(), loaded.labels
    torch.manual_seed(seed)
    unet = UNet2DModel(**PEER_UNET)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    cfg = PEER_TRAIN
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], betas=cfg["betas"], weight_decay=cfg["weight_decay"])
    ema = EMAModel(unet.parameters(), decay=cfg["ema_max_decay"], use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    g = torch.Generator().manual_seed(seed)
    step, started = 0, time.perf_counter()
    deadline = started + 60 * minutes
    perm, pos = torch.randperm(len(x_all), generator=g), 0
    while time.perf_counter() < deadline:
        if pos + cfg["batch_size"] > len(perm):
            perm, pos = torch.randperm(len(x_all), generator=g), 0
        idx = perm[pos:pos + cfg["batch_size"]]
        pos += cfg["batch_size"]
        x0, y = x_all[idx], y_all[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (len(x0),), generator=g)
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.step(unet.parameters())
        step += 1
    wall = time.perf_counter() - started
    ema.copy_to(unet.parameters())
    params = sum(p.numel() for p in unet.parameters())
    return unet.eval(), scheduler, {"steps": step, "train_wall_s": wall,
                                    "images_per_s": step * cfg["batch_size"] / wall, "params": params,
                                    "final_loss": float(loss.detach())}


@torch.no_grad()
def sample_peer(unet: Any, train_scheduler: Any, n: int, steps: int, batch_size: int = 250
                ) -> tuple[Tensor, dict[str, Any]]:
    """n class-balanced samples with diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M)."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_config(train_scheduler.config)
    labels = class_labels(n)
    out, started = [], time.perf_counter()
    g = torch.Generator().manual_seed(0)
    for start in range(0, n, batch_size):
        y = labels[start:start + batch_size]
        x = torch.randn((len(y), 1, 28, 28), generator=g)
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t, class_labels=y).sample, t, x).prev_sample
        out.append(x)
    return torch.cat(out).clamp(-1, 1), {"sampler": "DPMSolverMultistepScheduler", "sample_steps": steps,
                                         "sample_wall_s": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------------- main


def _row(name: str, r: dict[str, Any]) -> str:
    rate = f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-"
    return (f"| {name} | {r['minutes']:g} | {r.get('steps', '-')} | {rate} | "
            f"{r['sampler']}, {r['sample_steps']} steps | {r['accuracy']:.3f} | {r['fd']:.3f} | {r['fd_ratio']:.2f} |")


def table(results: list[tuple[str, dict[str, Any]]], floor: float) -> str:
    """The Markdown table of the runs."""
    lines = [f"FD floor (1,000 real training images vs the 2,000 held-out): {floor:.3f}", "",
             "| recipe | minutes | steps | images/s | sampling | class accuracy | FD | FD / floor |",
             "|---|---|---|---|---|---|---|---|"]
    return "\n".join(lines + [_row(name, r) for name, r in results]) + "\n"


def score_run(args: argparse.Namespace) -> None:
    """Print one table row per guidance scale for an existing run, scored as the benchmark scores."""
    scorer = Scorer(args.data, args.n)
    print(f"FD floor {scorer.floor:.4f}", flush=True)
    ck = checkpoint.latest(args.score) or args.score
    manifest = checkpoint.read_manifest(ck)
    for scale in args.guidance:
        x, sample_info = sample_ours(ck, args.n, guidance=scale)
        row = {"minutes": round(manifest["meta"]["elapsed"] / 60, 2), "steps": manifest["step"],
               **scorer.score(x, class_labels(args.n)), **sample_info}
        print(_row(f"{args.score}, guidance {scale:g}", row), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall budget per recipe")
    parser.add_argument("--curve-every", type=float, default=5.0,
                        help="also score our checkpoints every this many minutes (0: only the last)")
    parser.add_argument("--data", default="/work/shared/data/mnist", help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path(".bench/time_to_quality"), help="output folder")
    parser.add_argument("--n", type=int, default=1000, help="samples per model (class-balanced)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--peer-steps", type=int, default=25, help="DPM-Solver++ steps for the peer's samples")
    parser.add_argument("--skip-peer", action="store_true", help="train and score ours only")
    parser.add_argument("--score", type=Path, default=None, metavar="RUN",
                        help="train nothing: score this run (or checkpoint) of ours at each --guidance")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0], help="guidance scales for --score")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.score is not None:
        return score_run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.out / "ours"
    if run.exists() and checkpoint.latest(run) is not None:
        raise SystemExit(f"{run} already holds a run; remove it or pass another --out")
    scorer = Scorer(args.data, args.n)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}; "
          f"FD floor {scorer.floor:.4f}", flush=True)
    results: list[tuple[str, dict[str, Any]]] = []

    info, checkpoints = train_ours(args.data, run, args.minutes, args.curve_every or None)
    print(f"ours: {info}", flush=True)
    for ck in checkpoints:
        minutes = checkpoint.read_manifest(ck)["meta"]["elapsed"] / 60
        x, sample_info = sample_ours(ck, args.n)
        row = {"minutes": round(minutes, 2), "steps": checkpoint.read_manifest(ck)["step"],
               **scorer.score(x, class_labels(args.n)), **sample_info}
        if ck == checkpoints[-1]:
            row.update(info)
            viz.image_grid_png(args.out / "ours.png", x[:100], labels=class_labels(100), nrow=10)
        results.append(("rediffuse mnist-fast", row))
        print(_row("rediffuse mnist-fast", row), flush=True)
    if not args.skip_peer:
        unet, scheduler, info = train_peer(args.data, args.minutes)
        print(f"diffusers: {info}", flush=True)
        x, sample_info = sample_peer(unet, scheduler, args.n, args.peer_steps)
        row = {"minutes": args.minutes, **info, **scorer.score(x, class_labels(args.n)), **sample_info}
        viz.image_grid_png(args.out / "diffusers.png", x[:100], labels=class_labels(100), nrow=10)
        results.append(("diffusers standard", row))
    text = table(results, scorer.floor)
    ours_final = [r for name, r in results if name.startswith("rediffuse")][-1]
    peer = [r for name, r in results if name.startswith("diffusers")]
    if peer:
        text += (f"\nAt {args.minutes:g} minutes: accuracy {ours_final['accuracy']:.3f} vs {peer[0]['accuracy']:.3f}; "
                 f"FD ratio (ours / diffusers) {ours_final['fd'] / peer[0]['fd']:.3f}\n")
    print(text)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"floor": scorer.floor, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
