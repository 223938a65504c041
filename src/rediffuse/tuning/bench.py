"""Which sampler to use: every sampler x grid x NFE against a high-accuracy solution from the same noise.

Deterministic samplers are scored by the RMS distance to the reference ODE solution of the same starting
noise; stochastic ones (which do not follow that trajectory) by the sliced Wasserstein distance between their
samples and the reference samples. The report recommends, per NFE, the deterministic sampler and grid with
the smallest error.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from rediffuse import samplers, viz
from rediffuse.samplers import generation as sampling
from rediffuse.evaluation.metrics import sliced_wasserstein
from rediffuse.io import atomic_write_text
from rediffuse.core.schedules import SPACINGS, Schedule
from rediffuse.tuning import grids as tg
from rediffuse.tuning.plan import SamplingPlan
from rediffuse.tuning.reference import reference_solution

NFES = (5, 10, 20, 50)


@dataclass
class Entry:
    """One measured cell of the table."""

    sampler: str
    spacing: str
    nfe_budget: int
    nfe: int
    error: float
    metric: str


class CountingDenoiser:
    """A denoiser wrapper that counts network evaluations."""

    def __init__(self, denoiser: Callable[..., Tensor]):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, *args, **kwargs) -> Tensor:
        self.calls += 1
        return self.denoiser(*args, **kwargs)


def _plans(schedule: Schedule, sampler: str, nfe: int, run_dir: Path | None) -> dict[str, SamplingPlan]:
    """The standard plans for this budget, plus the tuned one if the run has it."""
    steps = tg.steps_for_nfe(sampler, nfe)
    plans = {spacing: SamplingPlan.standard(schedule, sampler, steps, spacing) for spacing in SPACINGS}
    if run_dir is not None:
        try:
            plans["tuned"] = tg.load_plan(run_dir, sampler, steps)
        except FileNotFoundError:
            pass
    return plans


@torch.no_grad()
def bench(denoiser: Callable[..., Tensor], schedule: Schedule, shape: Sequence[int], *, n: int = 256,
          nfes: Sequence[int] = NFES, names: Sequence[str] | None = None, seed: int = 0,
          run_dir: Path | None = None, device: str = "cpu",
          cond: Tensor | None = None, progress: Callable[[str], None] | None = None) -> list[Entry]:
    """Measure every sampler on every grid at every NFE budget; returns the table's entries."""
    gens = sampling.sample_generators(seed, range(n), device)
    x = sampling.prior(schedule, schedule.sigma_max, (n, *shape), gens, device)
    cond = None if cond is None else cond.to(device)
    ref = reference_solution(denoiser, x, schedule.sigma_max, schedule.sigma_min, cond)
    counter = CountingDenoiser(denoiser)
    entries = []
    for name in names or list(samplers.SAMPLERS):
        stochastic = name in samplers.STOCHASTIC
        for nfe in nfes:
            for spacing, plan in _plans(schedule, name, nfe, run_dir).items():
                counter.calls = 0
                out = plan.run(counter, x, cond=cond, generator=torch.Generator(device=device).manual_seed(seed + 1))
                if stochastic:
                    err = sliced_wasserstein(out.flatten(1), ref.flatten(1), seed=seed)
                else:
                    err = float((out - ref).double().pow(2).mean().sqrt())
                entries.append(Entry(name, spacing, nfe, counter.calls, err if math.isfinite(err) else math.inf,
                                     "sliced-W2" if stochastic else "rms"))
            if progress is not None:
                progress(name)
    return entries


def recommend(entries: Sequence[Entry]) -> dict[int, Entry]:
    """Per NFE budget, the deterministic sampler and grid with the smallest RMS error."""
    best: dict[int, Entry] = {}
    for e in entries:
        if e.metric == "rms" and e.nfe <= e.nfe_budget and (e.nfe_budget not in best
                                                             or e.error < best[e.nfe_budget].error):
            best[e.nfe_budget] = e
    return best


def markdown(entries: Sequence[Entry], title: str) -> str:
    """The table as Markdown: one row per sampler/grid, one column per NFE budget, then recommendations."""
    nfes = sorted({e.nfe_budget for e in entries})
    rows: dict[tuple[str, str, str], dict[int, Entry]] = {}
    for e in entries:
        rows.setdefault((e.sampler, e.spacing, e.metric), {})[e.nfe_budget] = e
    lines = [f"# {title}", "", "Error against a high-accuracy reference from the same noise "
             "(rms: deterministic samplers; sliced-W2: stochastic ones). NFE actually used in brackets.", "",
             "| sampler | grid | metric | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
             "|---|---|---|" + "---|" * len(nfes)]
    for (name, spacing, metric), cells in rows.items():
        vals = [f"{cells[k].error:.3e} ({cells[k].nfe})" if k in cells else "-" for k in nfes]
        lines.append(f"| {name} | {spacing} | {metric} | " + " | ".join(vals) + " |")
    lines += ["", "## Recommended (deterministic, lowest error)", "", "| NFE | sampler | grid | rms error |",
              "|---|---|---|---|"]
    for k, e in sorted(recommend(entries).items()):
        lines.append(f"| {k} | {e.sampler} | {e.spacing} | {e.error:.3e} |")
    return "\n".join(lines) + "\n"


def plot(entries: Sequence[Entry], path: Path, title: str) -> Path:
    """Error vs NFE, one line per sampler (its best grid at each NFE)."""
    fig = viz.figure(12, 4.5)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("rms", "sliced-W2")):
        for name in dict.fromkeys(e.sampler for e in entries if e.metric == metric):
            best: dict[int, float] = {}
            for e in entries:
                if e.sampler == name and math.isfinite(e.error):
                    best[e.nfe_budget] = min(best.get(e.nfe_budget, math.inf), e.error)
            ks = sorted(best)
            ax.loglog(ks, [best[k] for k in ks], marker="o", label=name)
        ax.set_xlabel("NFE")
        ax.set_ylabel(f"{metric} error (best grid)")
        ax.set_title(f"{title}: {'deterministic' if metric == 'rms' else 'stochastic'}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return viz.save_figure(fig, path, dpi=110)


def write_report(entries: Sequence[Entry], out_dir: Path, title: str) -> list[Path]:
    """Write bench.json, bench.md and bench.png into out_dir (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("bench.json", json.dumps({"title": title, "entries": [asdict(e) for e in entries],
                                                   "recommended": {k: asdict(e) for k, e in
                                                                   recommend(entries).items()}}, indent=1)),
                       ("bench.md", markdown(entries, title))):
        written.append(atomic_write_text(out_dir / name, text))
    written.append(plot(entries, out_dir / "bench.png", title))
    return written
