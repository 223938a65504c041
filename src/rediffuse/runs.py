"""A run folder: find its checkpoint, read its saved config and model spec, rebuild and load its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse import checkpoint, objectives, schedules
from rediffuse.config import TrainConfig
from rediffuse.denoisers import Denoiser
from rediffuse.errors import CheckpointError, ConfigError


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint a path names: a `ckpt-<step>` folder itself, or a run folder's newest complete one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run folder {str(path)!r} does not exist; give the --out folder of a training run")
    if path.is_file():
        raise CheckpointError(checkpoint.not_a_folder(path))
    if (path / checkpoint.MANIFEST).exists() or path.name.startswith(checkpoint.PREFIX):
        return path
    skipped: list[str] = []
    found = checkpoint.latest(path, warn=skipped.append)
    if found is not None:
        for message in skipped:  # named only when an older checkpoint is used in their place
            checkpoint.warn_once(message)
        return found
    existing = checkpoint.list_checkpoints(path)
    if not existing:
        raise CheckpointError(f"{str(path)!r} holds no checkpoint; train one with `rediffuse train --out {path}`")
    try:
        checkpoint.check(existing[-1])
    except CheckpointError as err:
        raise CheckpointError(f"{str(path)!r} holds no complete checkpoint: {err}") from None
    return existing[-1]


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The model spec of a run's checkpoint (net, schedule, parameterization, sigma_data, data shape/classes)."""
    path = find_checkpoint(run_dir)
    spec, _, _ = model_of(path, checkpoint.read_manifest(path)["meta"])
    return {**spec, "checkpoint": str(path)}


def load_model(run_dir: str | Path, ema: bool = True, device: torch.device | str = "cpu"
               ) -> tuple[nn.Module, dict[str, Any], TrainConfig]:
    """(the objective's model in eval mode, its spec, training config) of a run's newest checkpoint."""
    path = find_checkpoint(run_dir)
    part = "ema" if ema else "model"
    ck = checkpoint.load(path, parts=[part])
    spec, net, model = model_of(path, ck.meta)
    load_weights(net, ck.tensors[part], path, part)
    model.to(device).eval().requires_grad_(False)
    return model, spec, config_of(path, ck.meta)


def load_run(run_dir: str | Path, ema: bool = True, device: torch.device | str = "cpu"
             ) -> tuple[Denoiser, schedules.Schedule, TrainConfig]:
    """(denoiser in eval mode, schedule, training config) of a Gaussian run's newest checkpoint, for sampling."""
    model, _, config = load_model(run_dir, ema, device)
    if not isinstance(model, Denoiser):
        raise CheckpointError(f"run {str(run_dir)!r} trained objective {config.objective!r}, not a Gaussian "
                              "denoiser; sample it with its own objective")
    return model, model.schedule, config


def saved_config(run_dir: str | Path) -> TrainConfig | None:
    """The training config stored in a run's newest complete checkpoint, or None if there is none."""
    path = checkpoint.latest(run_dir)
    return None if path is None else config_of(path, checkpoint.read_manifest(path)["meta"])


def config_of(path: Path, meta: dict[str, Any]) -> TrainConfig:
    """The TrainConfig stored in a checkpoint's metadata (CheckpointError if absent or invalid)."""
    try:
        return TrainConfig.from_dict(meta["train_config"])
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has no valid training config ({err}); "
                              "it was not written by `rediffuse train` or is corrupt") from None


def model_of(path: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], nn.Module, nn.Module]:
    """(spec, network, model) built from a checkpoint's metadata (CheckpointError if it is unusable)."""
    config = config_of(path, meta)
    try:
        objective, spec = objectives.get(config), meta["model"]
        check_shapes_first(objective, spec, path)
        net = objective.build(spec)
        return spec, net, objective.model(spec, net)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has an invalid model description "
                              f"({type(err).__name__}: {err}); it is corrupt or from another program") from None


def check_shapes_first(objective: Any, spec: dict[str, Any], path: Path) -> None:
    """CheckpointError if the network the spec describes does not fit model.safetensors' header, found by building
    it on the meta device (no memory), so an edited spec never allocates before it fails."""
    file = path / "model.safetensors"
    if not file.is_file():
        return
    try:
        with torch.device("meta"):
            probe = objective.build(spec)
    except (NotImplementedError, RuntimeError):  # a network that cannot be built without data: checked on load
        return
    problem = _state_mismatch({k: tuple(v.shape) for k, v in probe.state_dict().items()},
                              checkpoint.tensor_shapes(file))
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r}: model.safetensors does not fit the model its manifest "
                              f"describes ({problem}); the checkpoint is corrupt or was edited")


def load_weights(module: nn.Module, tensors: dict[str, Tensor], path: Path, part: str) -> None:
    """module.load_state_dict(tensors) after checking names and shapes (CheckpointError naming a mismatch)."""
    expected = module.state_dict()
    problem = _state_mismatch({k: tuple(v.shape) for k, v in expected.items()},
                              {k: tuple(v.shape) for k, v in tensors.items()})
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r}: {part}.safetensors does not fit the model "
                              f"({problem}); the checkpoint is corrupt or belongs to another model")
    module.load_state_dict(tensors)


def _state_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    """The first difference between two {name: shape} maps, in words, or None if they agree."""
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
    if extra:
        return f"{len(extra)} unexpected tensor(s), e.g. {extra[0]!r}"
    for name, shape in expected.items():
        if found[name] != shape:
            return f"{name!r} has shape {list(found[name])}, the model expects {list(shape)}"
    return None
