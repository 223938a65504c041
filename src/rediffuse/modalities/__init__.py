"""The kinds of data, one object each (`base.Modality`): points, images, audio, text and tables, by name."""

from __future__ import annotations

from typing import Any

from rediffuse.modalities.audio import Audio
from rediffuse.modalities.base import Drawn, Extras, Modality
from rediffuse.modalities.images import Images
from rediffuse.modalities.points import Points
from rediffuse.modalities.table import Table
from rediffuse.modalities.text import Text

MODALITIES: dict[str, Modality] = {m.name: m for m in (Points(), Images(), Audio(), Text(), Table())}


def get(name: str) -> Modality:
    """The modality of a name ('points', 'images', 'audio', 'text'); ValueError naming the choices."""
    if name not in MODALITIES:
        raise ValueError(f"unknown kind of data {name!r}; choose one of {', '.join(MODALITIES)}")
    return MODALITIES[name]


def of(spec: dict[str, Any]) -> Modality:
    """The modality of a model spec (its data's kind)."""
    return get(spec.data.kind)


__all__ = ["MODALITIES", "Drawn", "Extras", "Modality", "get", "of"]
