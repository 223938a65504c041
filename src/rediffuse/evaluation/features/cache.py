"""Trained digit classifiers cached as safetensors + JSON in the user's cache folder, retrained when stale."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from rediffuse.io import atomic_write
from rediffuse.evaluation.features.classifier import CONFIGS, ClassifierConfig, DigitClassifier
from rediffuse.evaluation.features.training import (REQUIRED_ACCURACY, SETTINGS, TrainSettings, check_kind,
                                                     labelled_recipe, load_split, train_classifier)

FORMAT = "rediffuse-digit-classifier"
# Bump when the architecture, training or split changes in a way the config/settings do not record.
CACHE_VERSION = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """cache_dir, else $REDIFFUSE_CACHE, else $XDG_CACHE_HOME/rediffuse, else ~/.cache/rediffuse."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("REDIFFUSE_CACHE"):
        return Path(os.environ["REDIFFUSE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rediffuse"


def entry_paths(kind: str, fingerprint: str, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(weights .safetensors, metadata .json) paths of a kind's classifier trained on data `fingerprint`."""
    stem = cache_root(cache_dir) / "classifiers" / f"{kind}-{fingerprint[:16]}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _expected_meta(kind: str, fingerprint: str, seed: int, config: ClassifierConfig,
                   settings: TrainSettings) -> dict[str, Any]:
    """The metadata fields a cached classifier must match to be reused."""
    return {
        "format": FORMAT,
        "version": CACHE_VERSION,
        "kind": kind,
        "fingerprint": fingerprint,
        "seed": seed,
        "config": config.to_dict(),
        "settings": settings.to_dict(),
    }


def _load_entry(weights: Path, meta_file: Path, expected: dict[str, Any]) -> tuple[DigitClassifier, dict] | str:
    """The cached (model, metadata), or a string saying why the entry cannot be used."""
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable metadata {meta_file} ({e})"
    if not isinstance(meta, dict):
        return f"metadata {meta_file} is not a JSON object"
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"metadata {meta_file}: {key} is {meta.get(key)!r}, expected {value!r}"
    try:
        data = weights.read_bytes()
    except OSError as e:
        return f"unreadable weights {weights} ({e})"
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        return f"weights {weights} do not match the sha256 in {meta_file}"
    model = DigitClassifier(ClassifierConfig.from_dict(meta["config"]))
    try:
        model.load_state_dict(load_safetensors(data), strict=True)
    except (RuntimeError, ValueError) as e:
        return f"weights {weights} do not fit the classifier ({e})"
    return model.eval(), meta


def save_classifier(model: DigitClassifier, meta: dict[str, Any], weights: Path, meta_file: Path) -> dict[str, Any]:
    """Write the weights, then the JSON metadata (with the weights' sha256), each atomically; return the metadata."""
    data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    atomic_write(weights, data)
    meta = {**meta, "weights_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write(meta_file, json.dumps(meta, indent=1, sort_keys=True).encode())
    return meta


def load_or_train_classifier(
    kind: str,
    data_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    retrain: bool = False,
    image_size: int | None = None,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """The `kind` ('digits' | 'mnist' | 'fsdd' | 'labelled': a run's own labelled images, data_path its data spec,
    resized to image_size) classifier in eval mode on `device`, with its metadata.

    Reuses `<cache>/classifiers/<kind>-<fingerprint[:16]>.{safetensors,json}` when the JSON matches this
    version, kind, data fingerprint, seed, config and settings and the weights match its sha256; otherwise
    (or with retrain=True) trains on the CPU, saves atomically and returns the new model. The metadata
    holds the measured held-out accuracy ("heldout_accuracy").
    """
    check_kind(kind)
    split = load_split(kind, data_path, image_size)
    config, settings = labelled_recipe(split) if kind == "labelled" else (CONFIGS[kind], SETTINGS[kind])
    weights, meta_file = entry_paths(kind, split.fingerprint, cache_dir)
    expected = _expected_meta(kind, split.fingerprint, seed, config, settings)
    if not retrain and meta_file.exists():
        loaded = _load_entry(weights, meta_file, expected)
        if not isinstance(loaded, str):
            model, meta = loaded
            return model.to(device), meta
        warnings.warn(f"retraining the {kind} classifier: {loaded}", stacklevel=2)
    model, metrics = train_classifier(kind, seed=seed, split=split, config=config, settings=settings)
    if metrics["heldout_accuracy"] < REQUIRED_ACCURACY[kind]:
        warnings.warn(f"the {kind} classifier reached only {metrics['heldout_accuracy']:.4f} held-out accuracy "
                      f"(expected >= {REQUIRED_ACCURACY[kind]}); its features may be unreliable", stacklevel=2)
    meta = {**metrics, **expected}
    try:
        meta = save_classifier(model, meta, weights, meta_file)
    except OSError as e:
        warnings.warn(f"could not cache the {kind} classifier in {weights.parent} ({e})", stacklevel=2)
    return model.to(device), meta
