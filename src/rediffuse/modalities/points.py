"""Points [N, d]: an MLP's samples as .npy, a scatter over the training data and a strip of the reverse
process (a GIF of it with --trajectory)."""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from rediffuse import viz
from rediffuse.io import atomic_write_arrays
from rediffuse.keys import need_positive_ints, opt
from rediffuse.modalities.base import Drawn, Extras, refuse_suffix
from rediffuse.modalities.gaussian import GaussianModality
from rediffuse.samplers.request import Step


@dataclass
class PointKeys:
    """The keys of points data."""

    num_points: int = opt(100_000, "training-set size drawn from an analytic points preset")


class Points(GaussianModality):
    """Vectors of d numbers (2-D toy sets, point files)."""

    name = "points"
    a_run = "a points run"
    keys = PointKeys  # the config keys this kind of data reads
    default_n = 5000

    def check_keys(self, config: Any) -> None:
        """ConfigError naming the first invalid points key."""
        need_positive_ints(config, ("num_points",))

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """An MLP."""
        return "mlp"

    def keeps_steps(self, trajectory: Path | None) -> bool:
        """Always: the reverse-process strip shows the whole draw."""
        return True

    def default_out(self, run_dir: Path) -> Path:
        """RUN/samples.npy."""
        return run_dir / "samples.npy"

    def check_out(self, out: Path) -> None:
        """An .npy path."""
        refuse_suffix(out, (".npy",), "a points run")

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """The .npy, the scatter and the reverse-process strip."""
        return [out, out.with_name(f"{out.stem}_scatter.png"), out.with_name(f"{out.stem}_reverse.png")]

    def write(self, out: Path, drawn: Drawn, spec: dict[str, Any], extras: Extras) -> list[Path]:
        """The .npy, a scatter over the training data, a strip of the reverse process (and its GIF)."""
        x = drawn.samples
        atomic_write_arrays(out, samples=x.numpy().astype(np.float32))
        data = extras.reference()
        snapshots = [(sigma, xs) for sigma, xs, _ in frames(drawn.steps)] + [(0.0, x)]
        picks = viz.strip_picks([sigma for sigma, _ in snapshots], float(x.std()) or 1.0)
        scatter = viz.scatter_png(out.with_name(f"{out.stem}_scatter.png"), x, data,
                                  title=f"{len(x)} samples ({drawn.settings.get('sampler')}, "
                                        f"{drawn.settings.get('steps')} steps)")
        strip = viz.reverse_strip_png(out.with_name(f"{out.stem}_reverse.png"), [snapshots[i] for i in picks], data)
        written = [out, scatter, strip]
        if extras.trajectory is not None:
            written.append(viz.points_gif(extras.trajectory, snapshots, data))
        return written


def frames(steps: Sequence[Step]) -> list[tuple[float, Tensor, Tensor]]:
    """(level, x, estimate) per step index, the batches' steps concatenated in sample order, on the CPU."""
    by_index: dict[int, list[Step]] = {}
    for step in steps:
        by_index.setdefault(step.index, []).append(step)
    return [(parts[0].level, torch.cat([p.x.cpu() for p in sorted(parts, key=lambda p: p.first)]),
             torch.cat([p.estimate.cpu() for p in sorted(parts, key=lambda p: p.first)]))
            for _, parts in sorted(by_index.items())]
