"""Optional TensorBoard logging (`--log tensorboard`): each log record's numbers as scalars in OUT/tensorboard."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rediffuse.errors import ConfigError

LOGS = ("jsonl", "tensorboard")
SKIPPED = ("step",)  # the x axis, not a curve


def require_tensorboard() -> None:
    """ConfigError naming the install when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--log tensorboard needs the tensorboard package; pip install 'rediffuse[tensorboard]' "
                          "(or pip install tensorboard), or drop --log (log.jsonl is always written)")


class TensorBoardLog:
    """A training callback writing every numeric field of a record as the scalar `train/<field>` at its step."""

    def __init__(self, out: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter  # imported here: an optional dependency

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def __call__(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key not in SKIPPED and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{key}", float(value), step)
        self.writer.flush()  # on disk at once: a run can stop at any step

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()
