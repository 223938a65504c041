"""How a Gaussian run is sampled when the caller leaves a setting out: the caller's value first, then the run's
recommended sampling (the `sampling` key a preset fills: what its benchmark measured), then the run's default
(Heun, or a few-step student's own consistency grid)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rediffuse.core.spec import ModelSpec
from rediffuse.errors import UsageError
from rediffuse.objectives.consistency import default_sampler
from rediffuse.samplers import TAKES_ETA


@dataclass(frozen=True)
class Choice:
    """The sampler, steps, spacing, guidance and noise scale eta (None: the sampler's own) of one draw, and which
    of them came from the recommendation."""

    sampler: str
    steps: int
    spacing: str
    guidance: float
    recommended: tuple[str, ...] = ()
    eta: float | None = None

    def describe(self) -> str:
        """One line: the settings, and which the run recommended."""
        text = f"{self.sampler}, {self.steps} steps" + (f", guidance {self.guidance:g}" if self.guidance != 1 else "")
        if self.spacing != "default":
            text += f", {self.spacing} spacing"
        if self.eta is not None:
            text += f", eta {self.eta:g}"
        if self.recommended:
            flags = "/".join(f"--{k}" for k in self.recommended)
            text += f" ({', '.join(self.recommended)}: the run's recommended sampling; {flags} to change)"
        return text


def choose(spec: ModelSpec, recommended: Mapping[str, Any] | None, sampler: str | None = None,
           steps: int | None = None, spacing: str | None = None, guidance: float | None = None,
           default_steps: int = 20, eta: float | None = None) -> Choice:
    """The settings of a draw: given values kept; the rest from the recommendation (its steps, spacing and eta
    only for its own sampler), else the default. A few-step student ignores a recommendation inherited from its
    teacher. UsageError for an eta the sampler does not take."""
    advice = {} if spec.consistency or not recommended else dict(recommended)
    fallback_sampler, fallback_steps = default_sampler(spec, default_steps)
    taken: list[str] = []

    def pick(key: str, given: Any, fallback: Any, applies: bool = True) -> Any:
        if given is not None:
            return given
        if applies and key in advice:
            taken.append(key)
            return advice[key]
        return fallback

    chosen = pick("sampler", sampler, fallback_sampler)
    own = chosen == advice.get("sampler", fallback_sampler)
    steps = pick("steps", steps, fallback_steps, own)
    spacing = pick("spacing", spacing, "default", own)
    scale = pick("guidance", guidance, 1.0, spec.data.num_classes is not None)
    noise = pick("eta", eta, None, own)
    if noise is not None and chosen not in TAKES_ETA:
        raise UsageError(f"--eta scales the fresh noise of {', '.join(TAKES_ETA)}; "
                         f"sampler {chosen!r} takes none: drop --eta or choose one of those")
    if noise is not None and not 0 <= noise <= 1:
        raise UsageError(f"--eta must be between 0 (no fresh noise) and 1 (the full posterior's), got {noise:g}")
    return Choice(str(chosen), int(steps), str(spacing), float(scale), tuple(taken),
                  None if noise is None else float(noise))
