"""Every table metric of one set of rows against the real training and held-out rows, and `rediffuse eval` for a
table run: its samples scored beside the floor (the held-out rows scored as if they were synthetic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rediffuse import modalities, runs
from rediffuse.data.table_types import Table
from rediffuse.data.tables import load_table, split_spec
from rediffuse.errors import UsageError
from rediffuse.evaluation.report import write_report
from rediffuse.evaluation.tables.fidelity import alpha_precision_beta_recall, classifier_two_sample
from rediffuse.evaluation.tables.pictures import histograms_png, trends_png
from rediffuse.evaluation.tables.shapes import column_shapes, pair_trends
from rediffuse.evaluation.tables.utility import dcr_share, ml_efficiency
from rediffuse.modalities.table import decoded
from rediffuse.samplers.request import Grid, SamplingRequest


def score(train: Table, heldout: Table, rows: Table, target: str | None, seed: int = 0) -> dict[str, float]:
    """The metrics of rows against the real ones: shape and trend errors (percent, of the training rows), alpha-
    precision and beta-recall, the classifier two-sample AUC, the DCR share and (with a target) ML efficiency."""
    shapes, trends = column_shapes(train, rows), pair_trends(train, rows)
    fidelity = alpha_precision_beta_recall(train, rows)
    out = {"shape_error_pct": 100 * shapes.error, "trend_error_pct": 100 * trends.error,
           "alpha_precision": fidelity.alpha_precision, "beta_recall": fidelity.beta_recall,
           "c2st_auc": classifier_two_sample(train, rows, seed=seed),
           "dcr_share": dcr_share(train, heldout, rows, seed)}
    if target is not None:
        efficiency = ml_efficiency(train, heldout, rows, target, seed=seed)
        out[f"ml_{efficiency.metric}"] = efficiency.synthetic
        out[f"ml_{efficiency.metric}_real"] = efficiency.real
    return out


def floor_score(train: Table, heldout: Table, target: str | None, seed: int = 0) -> dict[str, float]:
    """`score` of the held-out real rows themselves; their DCR share and the ML score of a model trained on the
    rows it is tested on are not defined (NaN; the ML figure of real training rows stays)."""
    found = score(train, heldout, heldout, target, seed)
    return {k: v if k.endswith("_real") or k.startswith(("shape", "trend", "alpha", "beta", "c2st")) else float("nan")
            for k, v in found.items()}


def heldout_of(data: str) -> str:
    """The held-out spec of a run's table data (UsageError without an @train part)."""
    source, part = split_spec(data)
    if part != "train":
        raise UsageError(f"the run trained on {data!r}, which has no held-out part; train on {data}@train, or "
                         "give --data with held-out rows")
    return f"table:{source}@heldout"


def evaluate_table(run_dir: str | Path, *, data: str | None = None, n: int | None = None, steps: int | None = None,
                   guidance: float = 1.0, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Samples of a table run scored against its training rows and the held-out rows; writes RUN/eval/eval.json,
    eval.md and the pictures (columns.png, trends.png); the report."""
    run_dir = Path(run_dir)
    opened = runs.open(run_dir)
    config = opened.config
    train = load_table(config.data, config.columns, config.target)
    heldout = load_table(data or heldout_of(config.data), config.columns, config.target)
    if heldout.schema.names != train.schema.names:
        raise UsageError(f"the held-out rows have columns {', '.join(heldout.schema.names)}, the run's "
                         f"{', '.join(train.schema.names)}; give rows of the run's table")
    count = n or len(train)
    request = SamplingRequest(count, steps=steps, seed=seed, guidance=guidance, device=torch.device(device))
    modality = modalities.of(opened.spec)
    modality.check_request(opened.spec, request, None)
    rows = decoded(opened.spec, modality.draw(opened.model(device), opened.spec, request, Grid()))
    target = config.target
    report = {"run": str(run_dir), "data": config.data, "rows": count, "settings": {"steps": steps, "seed": seed,
                                                                                     "guidance": guidance},
              "synthetic": score(train, heldout, rows, target, seed),
              "floor": floor_score(train, heldout, target, seed)}
    out = write_report(run_dir, report, markdown(report))
    histograms_png(out / "columns.png", train, rows)
    trends_png(out / "trends.png", train, rows)
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: each metric for the samples and for the held-out rows (the floor)."""
    lines = [f"# Evaluation of {report['run']}", "",
             f"{report['rows']} synthetic rows against the training rows of {report['data']}; the floor scores the "
             "held-out real rows the same way (their DCR share and ML score are not defined).", "",
             "| metric | synthetic | held-out real (floor) |", "|---|---|---|"]
    for name, value in report["synthetic"].items():
        floor = report["floor"].get(name, np.nan)
        lines.append(f"| {name} | {value:.4f} | {floor:.4f} |")
    return "\n".join(lines) + "\n"
