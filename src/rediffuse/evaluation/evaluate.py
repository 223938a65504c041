"""Evaluating a trained image or audio run: Frechet distance, precision/recall, class accuracy, IS, bits/dim.

Features come from the project's own digit classifiers (`rediffuse.evaluation.features`): digits and MNIST
runs are classified as images, spoken-digit (fsdd:PATH) runs through 32 x 32 log-mel images of their clips.
Every sample metric is also computed for held-out real data in place of samples: the floor a perfect model
would reach at that sample size. Samples are generated in batches with per-sample seeds and cached beside
the run, so repeated evaluations reuse them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from rediffuse import distributed
from rediffuse.data.audio import resample_to
from rediffuse.data.images import load_images
from rediffuse.evaluation.features import (InceptionFeatures, classify, extract_features, load_inception,
                                           load_or_train_classifier, load_split, probabilities)
from rediffuse.evaluation.features.training import FSDD_RATE, DigitSplit
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.objectives.consistency import run_sampling
from rediffuse.samplers.generation import generate, require_finite
from rediffuse.evaluation.report import write_report
from rediffuse.evaluation.audio_opinion import audio_markdown, audio_report
from rediffuse.io import atomic_write_arrays
from rediffuse.evaluation.likelihood import bits_per_dim
from rediffuse.evaluation.metrics import frechet_distance, inception_score, modified_inception_score, prdc
from rediffuse import modalities, runs
from rediffuse.audio.spectral import log_mel_image

METRICS = ("fd", "prdc", "acc", "is", "nll")  # what `evaluate` measures; each modality says which it takes


def classifier_kind(data_spec: str) -> tuple[str, str | None]:
    """('digits' | 'mnist', data path or None) for a run's data spec; other data has no built-in features."""
    base = data_spec.rpartition("@")[0] if "@" in data_spec else data_spec
    if base.startswith("digits"):
        return "digits", None
    if base.startswith(("mnist:", "fsdd:")):
        return base.partition(":")[0], base.partition(":")[2]
    raise ValueError(f"no built-in feature extractor for data {data_spec!r}: evaluation supports digits, "
                     "mnist:PATH and fsdd:PATH runs (Inception features: rediffuse.evaluation.features.load_inception)")


def feature_kind(data_spec: str, features: str) -> tuple[str, str | None]:
    """(classifier kind, its data path) for `--features`: 'auto' (the built-in digit classifiers), 'classifier'
    (built-in, else one trained on the run's own labelled images) or 'inception:PATH' (FID's Inception-v3)."""
    if features.startswith("inception:"):
        return "inception", features.partition(":")[2]
    if features not in ("auto", "classifier"):
        raise ValueError(f"unknown --features {features!r}; use auto, classifier or inception:PATH (the FID "
                         "Inception-v3 weights file)")
    try:
        return classifier_kind(data_spec)
    except ValueError:
        if features == "classifier":
            return "labelled", data_spec
        raise ValueError(f"no built-in feature extractor for data {data_spec!r}: give --features classifier (a "
                         "classifier trained on the run's labelled images) or --features inception:PATH") from None


def load_features(kind: str, data_path: str | None, image_size: int | None) -> tuple[Any, DigitSplit, dict]:
    """(classifier, the real split, its metadata) of a classifier kind."""
    model, meta = load_or_train_classifier(kind, data_path, device="cpu", image_size=image_size)
    return model, load_split(kind, data_path, image_size), meta


def inception_features(weights: str, data_spec: str, image_size: int | None) -> tuple[Any, DigitSplit, dict]:
    """(FID's Inception-v3, the run's images split by the project rule (labels where it has them), metadata)."""
    spec = data_spec.rpartition("@")[0] if data_spec.endswith(("@train", "@heldout")) else data_spec
    data = load_images(spec, size=image_size)
    held = torch.arange(len(data.images)) % 5 == 0
    labels = data.labels
    split = DigitSplit(data.images[~held], None if labels is None else labels[~held], data.images[held],
                       None if labels is None else labels[held], "")
    return load_inception(weights), split, {"kind": "inception", "weights": weights}


def at_fsdd_rate(x: Tensor, rate: int | None) -> Tensor:
    """Clips [N, 1, L] at `rate` Hz resampled to the 8 kHz the spoken-digit classifiers hear."""
    if rate == FSDD_RATE:
        return x
    clips = [resample_to(clip.reshape(-1).numpy(), rate, FSDD_RATE) for clip in x.cpu()]
    return torch.from_numpy(np.stack(clips)).unsqueeze(1)


def classifier_inputs(x: Tensor, kind: str, rate: int | None) -> Tensor:
    """What the classifier of `kind` reads: images as they are; clips [N, 1, L] as log-mel images at 8 kHz."""
    return x if kind != "fsdd" else log_mel_image(at_fsdd_rate(x, rate), FSDD_RATE)


def cached_samples(run_dir: Path, denoiser: Callable, schedule: Any, shape: Sequence[int], n: int,
                   num_classes: int | None, options: dict[str, Any], grid: dict[str, Any] | None = None
                   ) -> tuple[Tensor, Tensor | None]:
    """n samples (class-balanced labels for conditional runs), generated once and cached in RUN/eval/; `grid`
    holds generate's options that follow from the run and the other options (a few-step grid)."""
    key = hashlib.sha256(json.dumps({"n": n, **options}, sort_keys=True).encode()).hexdigest()[:12]
    path = run_dir / "eval" / f"samples-{key}.npz"
    cond = None if not num_classes else torch.arange(n) % num_classes
    if path.exists():
        with np.load(path) as cached:
            return torch.from_numpy(cached["samples"]), cond
    path.parent.mkdir(parents=True, exist_ok=True)
    den = denoiser if options.get("guidance", 1.0) == 1.0 else cfg_denoiser(denoiser, options["guidance"])
    gen_options = {**{k: v for k, v in options.items() if k != "guidance"}, **(grid or {})}
    with tqdm(total=n, desc="sampling", disable=None if distributed.is_main_process() else True) as bar:
        x = generate(den, schedule, shape, n=n, cond=cond, progress=bar.update, world=distributed.current(),
                     **gen_options)
    x = require_finite(x.cpu(), "sampling for the evaluation")  # the modality's deliver() bounds it
    if distributed.is_main_process():
        atomic_write_arrays(path, samples=x.numpy())
    return x, cond


def features_of(model: torch.nn.Module, images: Tensor) -> Tensor:
    """The features a model gives images: a classifier's penultimate layer or Inception's pool3."""
    return model.features(images) if isinstance(model, InceptionFeatures) else extract_features(model, images)


def sample_metrics(model: torch.nn.Module, images: Tensor, labels: Tensor | None, real_feats: Tensor,
                   metrics: Sequence[str]) -> dict[str, float]:
    """The sample metrics of one image set against the real training features (Inception: FD and PRDC only)."""
    feats = features_of(model, images)
    out: dict[str, float] = {"n": float(len(images))}
    if isinstance(model, InceptionFeatures):
        metrics = [m for m in metrics if m in ("fd", "prdc")]
    if "is" in metrics:
        probs = probabilities(model, images)
        out.update(inception_score=inception_score(probs), modified_inception_score=modified_inception_score(probs))
    if "fd" in metrics:
        out["fd"] = frechet_distance(feats, real_feats)
    if "prdc" in metrics:
        out.update(prdc(real_feats, feats, k=5))
    if "acc" in metrics and labels is not None:
        out["class_accuracy"] = float((classify(model, images) == labels).float().mean())
    return out


def evaluate(run_dir: str | Path, *, metrics: Sequence[str] = METRICS, n: int = 10_000, sampler: str = "heun",
             steps: int = 18, seed: int = 0, guidance: float = 1.0, batch_size: int = 500, nll_n: int = 64,
             device: str = "cpu", features: str = "auto", eta: float | None = None) -> dict[str, Any]:
    """Evaluate a run: metrics for its samples and for held-out real data (the floor); writes RUN/eval/.

    Under torchrun the ranks split the sample batches (identical to one process); rank 0 writes the files.
    """
    run_dir = Path(run_dir)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    opened = runs.open(run_dir)
    spec, config = opened.spec, opened.config
    denoiser = opened.model(device)
    schedule, info, modality = denoiser.schedule, spec.data, modalities.of(spec)
    if not set(modality.eval_metrics) & set(METRICS):
        raise ValueError("rediffuse eval measures image and audio runs; for points use bench-samplers or the "
                         "metrics module")
    if "nll" in metrics and "nll" not in modality.eval_metrics:
        raise ValueError(f"bits/dim (nll) is for image runs; give {modality.name} runs --metrics from "
                         f"{','.join(modality.eval_metrics)}")
    if spec.consistency and "nll" in metrics:
        raise ValueError("bits/dim (nll) integrates a denoiser's ODE, and a `distill` run is a consistency "
                         "function: evaluate its teacher's bits/dim, or drop nll from --metrics")
    kind, data_path = feature_kind(config.data, features)
    if kind == "inception":
        classifier, split, meta = inception_features(data_path, config.data, config.image_size)
    else:
        classifier, split, meta = load_features(kind, data_path, config.image_size)
    real_feats = features_of(classifier, split.train_x)
    report: dict[str, Any] = {"run": str(run_dir), "classifier": {"kind": kind,
                              "heldout_accuracy": meta.get("heldout_accuracy")},
                              "settings": {"n": n, "sampler": sampler, "steps": steps, "seed": seed,
                                           "guidance": guidance, "eta": eta}}
    sample_side = [m for m in metrics if m != "nll"]
    if sample_side:
        options = dict(sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, device=device,
                       guidance=guidance, **({} if eta is None else {"eta": eta}))
        x, cond = cached_samples(run_dir, denoiser, schedule, info.shape, n, info.num_classes, options,
                                 run_sampling(spec, sampler, steps))
        delivered = modality.deliver(info, x)
        x = classifier_inputs(delivered, kind, info.rate)
        if kind == "fsdd":  # a second classifier of another family, and the clips' level and silence
            report.update(audio_report(data_path, at_fsdd_rate(delivered, info.rate), cond))
        report["samples"] = sample_metrics(classifier, x, cond, real_feats, sample_side)
        held = len(split.heldout_x)
        report["samples_at_heldout_n"] = sample_metrics(classifier, x[:held], None if cond is None else cond[:held],
                                                        real_feats, sample_side)
        report["heldout_real"] = sample_metrics(classifier, split.heldout_x, split.heldout_y, real_feats,
                                                sample_side)
    if "nll" in metrics:
        images = split.heldout_x[:nll_n].to(device)
        levels = ((images + 1) * 127.5).round().to(torch.uint8)  # the data on the 8-bit scale
        result = bits_per_dim(denoiser, levels, schedule.sigma_min, schedule.sigma_max, schedule=schedule,
                              divergence="hutchinson", generator=torch.Generator(device=device).manual_seed(seed))
        report["nll"] = {**result.summary(), "images": len(images), "estimator": "PF-ODE, Hutchinson (1 probe)"}
    if distributed.is_main_process():
        write_report(run_dir, report, markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """A short Markdown report of an evaluation."""
    s = report["settings"]
    c = report["classifier"]
    source = "FID's Inception-v3 (pool3)" if c["kind"] == "inception" else \
        f"the project's {c['kind']} classifier (held-out accuracy {c['heldout_accuracy']})"
    lines = [f"# Evaluation of {report['run']}", "",
             f"{s['n']} samples, {s['sampler']} with {s['steps']} steps, guidance {s['guidance']}"
             f"{'' if s.get('eta') is None else ', eta ' + format(s['eta'], 'g')}, seed {s['seed']}. "
             f"Features: {source}.", ""]
    rows = [("samples", "model samples"), ("samples_at_heldout_n", "model samples, first N_heldout"),
            ("heldout_real", "held-out real data (floor)")]
    keys = ["n", "fd", "precision", "recall", "density", "coverage", "class_accuracy", "inception_score",
            "modified_inception_score"]
    present = [k for k in keys if any(k in report.get(r, {}) for r, _ in rows)]
    if present:
        lines += ["| set | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
        for key, label in rows:
            if key in report:
                lines.append(f"| {label} | " + " | ".join(
                    f"{report[key][k]:.4g}" if k in report[key] else "-" for k in present) + " |")
    lines += audio_markdown(report)
    if "nll" in report:
        r = report["nll"]
        lines += ["", f"Bits/dim on {r['images']} held-out images ({r['estimator']}): "
                      f"{r['bits_per_dim']:.3f} +- {r['bits_per_dim_stderr']:.3f}"]
    return "\n".join(lines) + "\n"
