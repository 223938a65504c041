"""What a kind of data is to the rest of the toolkit: its network, its draws, its files, pictures and metrics.

One `Modality` object per kind of data (`rediffuse.modalities.MODALITIES`) holds every choice that depends on
the kind: the default network for its examples, how a draw from a model of it runs and streams its steps, how
samples are delivered to the user and written (NPY, PNG, WAV, JSONL), its training preview, and the defaults of
`rediffuse eval`. Everything above it asks the object instead of branching on the kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import Tensor, nn

from rediffuse.errors import UsageError
from rediffuse.io import atomic_write_arrays
from rediffuse.samplers import generation
from rediffuse.samplers.request import Grid, OnStep, SamplingRequest, Step


@dataclass(frozen=True, eq=False)
class Drawn:
    """One draw as the user receives it: the samples, their labels, and the recorded steps (when kept)."""

    samples: Tensor
    labels: Tensor | None = None
    steps: list[Step] = field(default_factory=list)
    start: Tensor | None = None  # the state every sample starts from, where it is given (text: the template)
    settings: dict[str, Any] = field(default_factory=dict)  # what the files record of how it was drawn


@dataclass(frozen=True, eq=False)
class Extras:
    """What writing a draw may use beyond the samples: the trajectory file asked for, the training data to draw
    beneath points (read on demand), and a redraw of the first k samples with their steps (for GIFs)."""

    trajectory: Path | None = None
    reference: Callable[[], Tensor | None] = lambda: None
    redraw: Callable[[int], Drawn] | None = None
    blank: str = "_"  # how a text trajectory draws a masked token


class Modality:
    """A kind of data: the defaults and routines that differ between points, images, audio and text."""

    name = ""
    a_run = ""  # how messages name a run of this kind ("an image run")
    gaussian = False  # drawn by the samplers from a denoiser (so sampled with --sampler, edited with a mask)
    keys: type | None = None  # the dataclass of config keys it declares (part of `config.TrainConfig`)
    default_n = 64  # samples drawn by `rediffuse sample` without -n
    eval_metrics: tuple[str, ...] = ()  # what `rediffuse eval` measures (empty: it does not evaluate this kind)
    eval_n = 10_000  # samples `rediffuse eval` draws by default
    eval_report = "samples"  # how `rediffuse eval` measures it: samples (features), nelbo (text) or table
    edit_route = "mask"  # how `rediffuse edit` takes its input: mask (a file and a mask), template (text), cells
    mirrors = False  # whether --hflip may mirror examples left to right (images)
    windows = False  # whether training reads random windows of one long example (a text's token stream)
    preview_per_class = 0  # samples per class (per row) in a training preview; 0: no preview picture

    def default_net(self, shape: Sequence[int], codec: dict | None) -> str:
        """The network name `--net auto` picks for examples of this shape."""
        raise NotImplementedError

    def default_out(self, run_dir: Path) -> Path:
        """Where `rediffuse sample` writes without --out."""
        raise NotImplementedError

    def check_keys(self, config: Any) -> None:
        """ConfigError naming the first invalid config key this kind of data declares (`keys`)."""

    def keeps_steps(self, trajectory: Path | None) -> bool:
        """Whether `write` reads the draw's steps (the caller then records them into Drawn.steps)."""
        return False

    def check_out(self, out: Path) -> None:
        """UsageError unless out is a path this kind of samples can be written to."""

    def outputs(self, out: Path, n: int, labels: Tensor | None) -> list[Path]:
        """Every file `write` makes for n samples at out (known before drawing, so nothing is replaced silently)."""
        raise NotImplementedError

    def check_request(self, spec: dict[str, Any], request: SamplingRequest, trajectory: Path | None) -> None:
        """UsageError for a request option this kind of data cannot honour."""

    def deliver(self, data_info: dict[str, Any], x: Tensor) -> Tensor:
        """Drawn samples as files hold them and `Run.sample` returns them."""
        return x

    def delivered_shape(self, data_info: Any) -> tuple[int, ...]:
        """The shape of one sample as delivered (and of one input to edit)."""
        return tuple(data_info.shape)

    def edit_outputs(self, out: Path, n: int) -> list[Path]:
        """Every file `write_edits` makes in the folder out for n results."""
        return [out / "edits.npz"]

    def write_edits(self, out: Path, inputs: Tensor, mask: Tensor, results: Tensor, per: int, spec: Any
                    ) -> list[Path]:
        """The edits as files: OUT/edits.npz (inputs, mask, results; `per` results per input)."""
        return [atomic_write_arrays(out / "edits.npz", inputs=inputs.numpy(), mask=mask.numpy(),
                                    results=results.numpy())]

    def encode(self, data_info: Any, x: Tensor) -> Tensor:
        """Inputs as delivered (what `deliver` returns) in the space the model draws in."""
        return x

    def model_mask(self, data_info: Any, missing: Tensor) -> Tensor:
        """A mask over delivered inputs as a mask over the model's space (what must be redrawn there)."""
        return missing

    def draw(self, model: nn.Module, spec: dict[str, Any], request: SamplingRequest, grid: Grid,
             on_step: OnStep | None = None, progress: Callable[[int], None] | None = None,
             world: generation.Ranks | None = None) -> Drawn:
        """The request's samples from the model (on request.device); steps go to on_step as they happen."""
        raise NotImplementedError

    def write(self, out: Path, drawn: Drawn, spec: dict[str, Any], extras: Extras) -> list[Path]:
        """Write the samples (and their pictures) to out; the paths written."""
        raise NotImplementedError

    def preview(self, path: Path, samples: Tensor, labels: Tensor | None) -> Path | None:
        """A picture of a training preview's samples at path; None where this kind has none."""
        return None


def labels_in_files(labels: Tensor | None) -> dict[str, Any]:
    """The labels entry of an .npz of samples (none for an unconditional draw)."""
    return {} if labels is None else {"labels": labels.numpy()}


def refuse_suffix(out: Path, suffixes: Sequence[str], what: str) -> None:
    """UsageError unless out ends in one of suffixes ('' meaning a folder)."""
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"--out for {what} must {_ending(suffixes)}, got {str(out)!r}")


def _ending(suffixes: Sequence[str]) -> str:
    """'end in .a or .b' or 'be a folder or end in .a', in words."""
    files = [s for s in suffixes if s]
    said = "end in " + " or ".join(files) if files else ""
    return f"be a folder or {said}" if "" in suffixes and files else (said or "be a folder")
