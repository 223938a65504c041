"""Our table model against the synthesisers people use, on the same rows, every metric, several seeds.

    python benchmarks/tables_vs_baselines.py [--sets wine breast_cancer diabetes iris adult]
        [--adult ../shared/data/adult/adult.csv] [--seeds 0 1 2 3 4] [--epochs 2000] [--adult-minutes 15]
        [--adult-steps 0] [--net auto|table-transformer] [--mask-power 1] [--sdv] [--sdv-seeds 0 1 2 3 4]
        [--ctgan-epochs 300] [--out table.md] [--only ours SDV ...] [--threads 2] [--epochs-for iris=5000]

Each set is split by the project's rule (`table:...@train` / `@heldout`: the seeded permutation in halves) with its
target column (the class; diabetes' disease progression is a number). Methods, each drawing as many rows as the
training half:
- ours: `--objective table` with its defaults, trained for `--epochs` passes over the rows on the bundled sets
  (their few hundred rows are memorised when trained much longer: the DCR share climbs towards 1) and for
  `--adult-minutes` on adult;
- independent marginals, a Gaussian copula, SMOTE-style interpolation, a copy of the training rows
  (`rediffuse.evaluation.tables.baselines`);
- with `--sdv` (the optional `bench` extra): SDV's GaussianCopulaSynthesizer and CTGANSynthesizer
  (`--ctgan-epochs`), on `--sdv-seeds` (CTGAN's default 300 epochs take minutes on adult);
- the floor: the held-out real rows themselves.
`--only` keeps the methods whose names start with one of its words (for example `--only SDV` to add SDV's rows to
an earlier run's table without retraining ours).
Every metric of `rediffuse.evaluation.tables.report.score` (shape and trend errors in percent against the training
rows, alpha-precision, beta-recall, the classifier two-sample AUC, ML efficiency on the held-out rows, the DCR share)
as mean +- standard deviation over the seeds, with fit and sampling seconds. Run it alone: the times are this
machine's.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rediffuse import modalities, runs
from rediffuse.config import TrainConfig
from rediffuse.data.table_types import Table
from rediffuse.data.tables import load_table
from rediffuse.evaluation.tables.baselines import BASELINES
from rediffuse.evaluation.tables.report import floor_score, score
from rediffuse.modalities.table import decoded
from rediffuse.samplers.request import Grid, SamplingRequest
from rediffuse.train import train as train_run

Fitted = Callable[[int, int], Table]  # (rows, seed) -> synthetic rows
Budget = tuple[int, float | None]  # (steps, minutes or None)


def ours(spec: str, target: str, budget: Budget, seed: int, folder: Path, net: str = "auto", mask_power: float = 1.0
         ) -> tuple[Fitted, float]:
    """A table run of `net` trained for `budget` (steps, minutes) with the categories' mask power; (its sampler,
    seconds of training)."""
    started = time.perf_counter()
    steps, minutes = budget
    config = TrainConfig(data=spec, objective="table", target=target, out=str(folder), steps=steps, minutes=minutes,
                         seed=seed, progress=False, log_every=1000, checkpoint_minutes=1e9, net=net,
                         table_mask_power=mask_power)
    train_run(config)
    seconds = time.perf_counter() - started
    opened = runs.open(folder)
    model, modality = opened.model("cpu"), modalities.of(opened.spec)

    def draw(n: int, draw_seed: int) -> Table:
        request = SamplingRequest(n, seed=draw_seed, device=torch.device("cpu"))
        return decoded(opened.spec, modality.draw(model, opened.spec, request, Grid()))
    return draw, seconds


def sdv_methods(train: Table, epochs: int) -> dict[str, Callable[[int], tuple[Fitted, float]]]:
    """SDV's GaussianCopula and CTGAN as (seed -> (sampler, fit seconds))."""
    import pandas as pd
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer

    frame = pd.DataFrame({name: train.cells(name) if not train.schema.column(name).numeric else train[name]
                          for name in train.schema.names})
    metadata = Metadata.load_from_dict({"tables": {"rows": {"columns": {
        c.name: {"sdtype": "numerical" if c.numeric else "categorical"} for c in train.schema.columns}}}})

    def fitted(make: Callable) -> Callable[[int], tuple[Fitted, float]]:
        def fit(seed: int) -> tuple[Fitted, float]:
            np.random.seed(seed)
            torch.manual_seed(seed)
            model, started = make(), time.perf_counter()
            model.fit({"rows": frame})
            return (lambda n, _: from_frame(model.sample(n), train)), time.perf_counter() - started
        return fit

    return {"SDV GaussianCopula": fitted(lambda: GaussianCopulaSynthesizer(metadata)),
            f"SDV CTGAN ({epochs} epochs)": fitted(lambda: CTGANSynthesizer(metadata, epochs=epochs))}


def from_frame(frame, like: Table) -> Table:
    """A pandas frame of sampled rows as a Table of `like`'s schema (unknown categories as the first one)."""
    frame = frame["rows"] if isinstance(frame, dict) else frame
    values = {}
    for column in like.schema.columns:
        cells = frame[column.name].tolist()
        if column.numeric:
            values[column.name] = np.array([np.nan if c is None or c != c else float(c) for c in cells])
        else:
            code = {c: i for i, c in enumerate(column.categories)}
            values[column.name] = np.array([code.get(str(c), 0) for c in cells], dtype=np.int64)
    return Table(like.schema, values)


def benchmark_set(name: str, source: str, target: str, args: argparse.Namespace) -> list[str]:
    """The table rows of one data set."""
    train, heldout = (load_table(f"table:{source}@{part}", target=target) for part in ("train", "heldout"))
    n = len(train)
    if name == "adult" and args.adult_steps:
        budget, said = (args.adult_steps, None), f"{args.adult_steps} steps"
    elif name == "adult":
        budget, said = (10**9, args.adult_minutes), f"{args.adult_minutes:g} min"
    else:
        epochs = dict((k, float(v)) for k, v in (e.split("=") for e in args.epochs_for)).get(name, args.epochs)
        steps = math.ceil(epochs * n / TrainConfig.batch_size)
        budget, said = (steps, None), f"{epochs:g} epochs = {steps} steps"
    results: dict[str, list[tuple[dict[str, float], float, float]]] = {}
    label = f"ours ({said})" if args.net == "auto" else f"ours, {args.net} ({said})"
    label = label if args.mask_power == 1 else f"{label[:-1]}, mask power {args.mask_power:g})"
    methods: dict[str, Callable[[int], tuple[Fitted, float]]] = {
        label: lambda seed: ours(f"table:{source}@train", target, budget, seed, Path(tempfile.mkdtemp()) / "run",
                                 args.net, args.mask_power)}
    for label, make in BASELINES.items():
        methods[label] = lambda seed, make=make: ((lambda k, s: make(train, k, s)), 0.0)
    sdv = sdv_methods(train, args.ctgan_epochs) if args.sdv else {}
    methods.update(sdv)
    if args.only:
        methods = {k: v for k, v in methods.items() if any(k.lower().startswith(w.lower()) for w in args.only)}
    for label, fit in methods.items():
        for seed in args.sdv_seeds if label in sdv else args.seeds:
            draw, fit_seconds = fit(seed)
            started = time.perf_counter()
            rows = draw(n, seed)
            seconds = time.perf_counter() - started
            results.setdefault(label, []).append((score(train, heldout, rows, target, seed), fit_seconds, seconds))
            print(name, label, seed, {k: round(v, 4) for k, v in results[label][-1][0].items()}, flush=True)
    results["held-out real rows (floor)"] = [(floor_score(train, heldout, target, 0), 0.0, 0.0)]
    return [row(name, label, found) for label, found in results.items()]


def row(name: str, label: str, found: list[tuple[dict[str, float], float, float]]) -> str:
    """One Markdown row: each metric's mean +- sd over seeds, then fit and sampling seconds."""
    keys = [k for k in found[0][0] if not k.endswith("_real")]
    cells = []
    for key in keys:
        v = np.array([f[0][key] for f in found])
        cells.append(f"{v.mean():.3f} +- {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}")
    ml_real = [k for k in found[0][0] if k.endswith("_real")]
    real = f" (real {found[0][0][ml_real[0]]:.3f})" if ml_real else ""
    times = f"{np.mean([f[1] for f in found]):.1f} | {np.mean([f[2] for f in found]):.2f}"
    return f"| {name} | {label} | {' | '.join(cells)}{real} | {times} |"


SETS = {"wine": ("wine", "target"), "breast_cancer": ("breast_cancer", "target"), "iris": ("iris", "target"),
        "diabetes": ("diabetes", "target")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", nargs="+", default=["wine", "breast_cancer", "diabetes", "adult"])
    p.add_argument("--adult", default="../shared/data/adult/adult.csv", help="the UCI Adult CSV")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=float, default=2000.0, help="our passes over the rows on the bundled sets")
    p.add_argument("--epochs-for", nargs="+", default=[], metavar="SET=EPOCHS",
                   help="another number of passes for some bundled sets, e.g. iris=5000")
    p.add_argument("--adult-minutes", type=float, default=15.0, help="our training minutes on adult")
    p.add_argument("--adult-steps", type=int, default=0, help="train ours on adult for steps instead of minutes")
    p.add_argument("--net", default="auto", help="our network: auto (table-mlp) or table-transformer")
    p.add_argument("--mask-power", type=float, default=1.0, help="our categories' schedule: masked share t^p")
    p.add_argument("--sdv", action="store_true", help="also SDV's GaussianCopula and CTGAN (the bench extra)")
    p.add_argument("--sdv-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the SDV methods")
    p.add_argument("--ctgan-epochs", type=int, default=300)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--only", nargs="+", default=None, help="only the methods whose names start with these words")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["| set | method | shape err % | trend err % | alpha-precision | beta-recall | C2ST AUC | DCR share | "
             "ML (AUC or RMSE) | fit s | sample s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.sets:
        source, target = (args.adult, "class") if name == "adult" else SETS[name]
        lines += benchmark_set(name, source, target, args)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
