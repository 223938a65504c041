"""A run folder: find its checkpoint, read its saved config and model spec, rebuild and load its model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rediffuse import checkpoint, objectives
from rediffuse.core import schedules
from rediffuse.config import TrainConfig
from rediffuse.core.consistency_models import ConsistencyFunction
from rediffuse.core.denoisers import PRETRAINED_FORMAT, Denoiser, wrap
from rediffuse.core.spec import ModelSpec, as_json, parse
from rediffuse.errors import CheckpointError, ConfigError
from rediffuse.nets import NETS


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint a path names: a `ckpt-<step>` folder itself, or a run folder's newest complete one."""
    return _locate(path)[0]


def _locate(path: str | Path) -> tuple[Path, bool]:
    """(the checkpoint a path names, whether this call hashed all of it): a pretrained or `ckpt-<step>` folder
    itself (not yet hashed), or a run folder's newest complete checkpoint (hashed by `checkpoint.latest`)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"run folder {str(path)!r} does not exist; give the --out folder of a training run")
    if path.is_file():
        raise CheckpointError(checkpoint.not_a_folder(path))
    if is_pretrained(path) or (path / checkpoint.MANIFEST).exists() or path.name.startswith(checkpoint.PREFIX):
        return path, False
    skipped: list[str] = []
    found = checkpoint.latest(path, warn=skipped.append)
    if found is not None:
        for message in skipped:  # named only when an older checkpoint is used in their place
            checkpoint.warn_once(message)
        return found, True
    existing = checkpoint.list_checkpoints(path)
    if not existing:
        raise CheckpointError(f"{str(path)!r} holds no checkpoint; train one with `rediffuse train --out {path}`")
    try:
        checkpoint.check(existing[-1])
    except CheckpointError as err:
        raise CheckpointError(f"{str(path)!r} holds no complete checkpoint: {err}") from None
    return existing[-1], True


@dataclass(eq=False)
class OpenRun:
    """A run opened once: the folder given, its checkpoint (each file hashed once), the model spec and the
    training config; the model is built and its weights loaded on first use, once."""

    path: Path
    checkpoint: Path
    spec: ModelSpec
    config: TrainConfig
    ema: bool = True
    hashed: bool = False  # whether opening already verified every file's sha256
    _model: nn.Module | None = field(default=None, repr=False)

    @property
    def pretrained(self) -> bool:
        """Whether this is a `save_pretrained` folder rather than a training checkpoint."""
        return is_pretrained(self.checkpoint)

    def model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The objective's model in eval mode on device (EMA weights unless opened with ema=False)."""
        if self._model is None:
            self._model = self._load()
        return self._model.to(device)

    def _load(self) -> nn.Module:
        """Build the model and load its weights (the only place a run's network is built)."""
        if self.pretrained:
            model = pretrained_model(self.spec, self.checkpoint)
        else:
            part = "ema" if self.ema else "model"
            ck = checkpoint.load(self.checkpoint, parts=[part], verified=self.hashed)
            net, model = _network(self.checkpoint, self.spec, self.config)
            load_weights(net, ck.tensors[part], self.checkpoint, part)
        if isinstance(self.spec, ModelSpec):
            model.data_info = self.spec.data.to_dict()  # what `save_pretrained` records for the model
        return model.eval().requires_grad_(False)


def open(path: str | Path, ema: bool = True) -> OpenRun:  # noqa: A001 (runs.open, as a file is opened)
    """A run folder (its newest complete checkpoint), a checkpoint folder or a pretrained folder, opened: its
    spec and config read and checked, nothing built yet."""
    found, hashed = _locate(path)
    if is_pretrained(found):
        spec = read_pretrained(found)
        return OpenRun(Path(path), found, spec, pretrained_config(spec, found), ema, hashed)
    meta = checkpoint.read_manifest(found)["meta"]
    config = config_of(found, meta)
    spec = spec_of(found, meta, config)
    return OpenRun(Path(path), found, spec, config, ema, hashed)


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """The model spec of a run's checkpoint (net, schedule, parameterization, sigma_data, data shape/classes)."""
    opened = open(run_dir)
    return {**as_json(opened.spec), "checkpoint": str(opened.checkpoint)}


def load_model(run_dir: str | Path, ema: bool = True, device: torch.device | str = "cpu"
               ) -> tuple[nn.Module, ModelSpec, TrainConfig]:
    """(the objective's model in eval mode, its spec, training config) of a run's newest checkpoint."""
    opened = open(run_dir, ema)
    return opened.model(device), opened.spec, opened.config


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


def spec_of(path: Path, meta: dict[str, Any], config: TrainConfig | None = None) -> ModelSpec:
    """The model spec in a checkpoint's metadata, checked against model.safetensors on the meta device
    (CheckpointError if it is unusable)."""
    config = config or config_of(path, meta)
    try:
        objective, spec = objectives.get(config), parse(meta["model"])
        check_shapes_first(objective, spec, path)
        return spec
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(_invalid(path, err)) from None


def _network(path: Path, spec: ModelSpec, config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """(network, model) a checked spec describes (CheckpointError if it cannot be built)."""
    try:
        objective = objectives.get(config)
        net = objective.build(spec)
        return net, objective.model(spec, net)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(_invalid(path, err)) from None


def _invalid(path: Path, err: Exception) -> str:
    """The one-line message for a checkpoint whose model description cannot be used."""
    return (f"checkpoint {str(path)!r} has an invalid model description ({type(err).__name__}: {err}); it is "
            "corrupt or from another program")


def check_shapes_first(objective: Any, spec: ModelSpec, path: Path) -> None:
    """CheckpointError if the network the spec describes does not fit model.safetensors' header, found by building
    it on the meta device (no memory), so an edited spec never allocates before it fails."""
    file = path / "model.safetensors"
    if not file.is_file():
        return
    try:
        with torch.device("meta"), _ShapesOnly():
            probe = objective.build(spec)
    except (NotImplementedError, RuntimeError):  # a network that cannot be built without data: checked on load
        return
    problem = _state_mismatch({k: tuple(v.shape) for k, v in probe.state_dict().items()},
                              checkpoint.tensor_shapes(file))
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r}: model.safetensors does not fit the model its manifest "
                              f"describes ({problem}); the checkpoint is corrupt or was edited")


class _ShapesOnly(TorchFunctionMode):
    """Skips normal_ on meta tensors while a probe is built: meta has no kernel for it, and its Python fallback
    imports the whole compiler stack (about a second of every command's start-up) to draw values nobody reads."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's protocol)
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if func in (torch.Tensor.normal_, torch.nn.init.normal_) and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


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


def is_pretrained(path: str | Path) -> bool:
    """Whether path is a `save_pretrained` folder (config.json naming the pretrained format, no checkpoint)."""
    config = Path(path) / "config.json"
    if not config.is_file() or (Path(path) / checkpoint.MANIFEST).exists():
        return False
    try:
        return json.loads(config.read_text()).get("format") == PRETRAINED_FORMAT
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False


def read_pretrained(path: str | Path) -> ModelSpec:
    """The spec in a `save_pretrained` folder's config.json (CheckpointError naming what is missing)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is not a folder; give the folder that save_pretrained wrote")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{str(path)!r} has no config.json, so it is not a save_pretrained folder; write one "
                              "with denoiser.save_pretrained(folder), or give a run folder to rediffuse.load")
    if not is_pretrained(path):
        raise CheckpointError(f"{str(path)!r}: config.json is not a pretrained model's config (no \"format\": "
                              f"\"{PRETRAINED_FORMAT}\"); for a training run use rediffuse.load({str(path)!r})")
    spec = json.loads((path / "config.json").read_text())
    missing = [k for k in ("net", "net_config", "parameterization", "schedule", "sigma_data", "data") if k not in spec]
    if missing or spec["net"] not in NETS:
        raise CheckpointError(f"{str(path)!r}: config.json lacks {', '.join(missing) or 'a known net'}; "
                              "it is damaged or from another program")
    try:
        return ModelSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r}: config.json's data description is damaged ({type(err).__name__}: "
                              f"{err}); save the model again") from None


def pretrained_model(spec: ModelSpec, path: Path) -> Denoiser:
    """The denoiser (or consistency function) a pretrained spec describes, with model.safetensors loaded."""
    try:
        net = NETS[spec.net].from_config(spec.net_config)
        schedule = schedules.from_config(spec.schedule)
        levels = spec.consistency
        model = wrap(net, spec.parameterization, schedule, spec.sigma_data) if levels is None else \
            ConsistencyFunction(net, spec.parameterization, schedule, spec.sigma_data, levels["sigma_min"],
                                levels["mid_sigma"], levels.get("method", "ect"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r}: config.json does not describe a model ({type(err).__name__}: "
                              f"{err}); it is damaged or from another program") from None
    try:
        tensors = load_file(str(path / "model.safetensors"))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{str(path)!r}: cannot read model.safetensors ({err}); save the model again") from None
    load_weights(net, tensors, path, "model")
    return model


def pretrained_config(spec: ModelSpec, path: Path) -> TrainConfig:
    """A TrainConfig describing a pretrained model (what `sample` and `eval` read from a run's config)."""
    data = spec.data
    return TrainConfig(data=str(data.spec or path), net=spec.net, parameterization=spec.parameterization,
                       conditional=data.num_classes is not None,
                       audio_representation=data.codec.get("frequency", "mel") if data.codec else "waveform")
