"""What a trained model is, as stored beside its weights: `ModelSpec` (the network, its preconditioning or
tokens, and the data) and `DataInfo` (the examples it draws). Both read and write the JSON of a checkpoint's
manifest and of a pretrained folder's config.json, so loading a model never runs code from a file.

For one release both also answer `spec["key"]`, as the dicts they replace did.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator


class _ReadsLikeADict:
    """`obj["name"]`, `obj.get("name")` and `"name" in obj` over the fields that are set, as the JSON form (the
    0.2 dicts) has them."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The field's value, or default where it is unset."""
        return self[key] if key in self else default

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self) -> Iterator[str]:
        """The names of the fields that are set."""
        return iter(self.to_dict())


@dataclass(frozen=True)
class DataInfo(_ReadsLikeADict):
    """The examples a model draws: their kind (a modality's name), shape and classes, the data spec it was
    trained on, and what the kind needs to deliver them (an audio run's rate and log-mel codec, text's tokens)."""

    kind: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    spec: str | None = None
    rate: int | None = None
    codec: dict[str, Any] | None = None
    tokens: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (unset optional fields left out; num_classes always there)."""
        out: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "num_classes": self.num_classes}
        for name in ("spec", "rate", "codec", "tokens"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataInfo:
        """A DataInfo from its JSON form (KeyError or TypeError for a damaged one)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known}, "shape": tuple(values["shape"])})


@dataclass(frozen=True)
class ModelSpec(_ReadsLikeADict):
    """Everything that rebuilds a trained model but its weights: the network by registry name and config, the
    data, and what its objective adds (a Gaussian run's schedule, parameterisation and sigma_data; a student's
    consistency levels; a text run's vocabulary, mask schedule and mask or BOS id)."""

    net: str
    net_config: dict[str, Any]
    data: DataInfo
    schedule: dict[str, Any] | None = None
    parameterization: str | None = None
    sigma_data: float | None = None
    consistency: dict[str, Any] | None = None
    vocab: dict[str, Any] | None = None
    mask_id: int | None = None
    bos_id: int | None = None
    block: int | None = None  # a block-diffusion run's block length L'
    table: dict[str, Any] | None = None  # a table run's codec: schema and transforms (`data.table_codec`)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other writers (a pretrained folder's format)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (unset optional fields left out)."""
        out: dict[str, Any] = {**self.extra, "net": self.net, "net_config": self.net_config}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in ("net", "net_config", "extra") and value is not None:
                out[f.name] = value.to_dict() if isinstance(value, DataInfo) else value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelSpec:
        """A ModelSpec from its JSON form (KeyError or TypeError for a damaged one)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        given = {k: v for k, v in values.items() if k in known}
        return cls(**{**given, "data": DataInfo.from_dict(values["data"])},
                   extra={k: v for k, v in values.items() if k not in known})

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def as_json(spec: ModelSpec | dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a spec (a custom objective's own dict as it is)."""
    return spec.to_dict() if isinstance(spec, ModelSpec) else spec


def parse(values: dict[str, Any]) -> ModelSpec | dict[str, Any]:
    """A stored spec as a ModelSpec (a custom objective's dict without a network and data, as it is)."""
    return ModelSpec.from_dict(values) if "net" in values and "data" in values else values
