"""Utility and privacy of synthetic rows: machine-learning efficiency and distance to closest record.

Machine-learning efficiency ("train on synthetic, test on real"): a default histogram gradient-boosting model
predicting the target column from every other column is trained once on the real training rows and once on the
synthetic rows, and both are scored on the held-out real rows. A category (or boolean) target is scored by ROC AUC,
macro-averaged one-vs-rest over the classes present in the held-out rows (for two classes this is the plain binary
AUC); a class the model never saw gets probability 0, a model trained on a single class predicts it with certainty,
and the score is NaN when the held-out rows hold fewer than two classes. A number target is scored by the RMSE over
the held-out rows whose target is present (rows with a missing target are dropped from training as well).

Distance to closest record (DCR): the rows are embedded by `Embedding` fitted on the training rows, the training and
held-out tables are cut to the same row count, and for each synthetic row the Euclidean distance to its nearest
training row is compared with that to its nearest held-out row. The share of synthetic rows closer to the training
rows (ties counting half) is about 0.5 for a generator that does not memorise and near 1 for one that copies rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from rediffuse.data.table_types import Column, Table
from rediffuse.evaluation.tables.encode import Embedding, boosting, equal_rows, model_inputs, same_schema


@dataclass(frozen=True)
class Efficiency:
    """Held-out scores of models trained on real and on synthetic rows, and the metric ('roc_auc' or 'rmse')."""

    real: float
    synthetic: float
    metric: str


def _class_probabilities(train: Table, test: Table, target: Column, features: list[str], seed: int) -> np.ndarray:
    """[test rows, len(target.categories)] class probabilities of a classifier trained on `train`."""
    labels = np.asarray(train[target.name], dtype=np.int64)
    probabilities = np.zeros((len(test), len(target.categories)))
    classes = np.unique(labels)
    if classes.size == 1:
        probabilities[:, classes[0]] = 1.0
        return probabilities
    x_train, categorical = model_inputs(train, features)
    model = boosting(True, categorical, seed).fit(x_train, labels)
    probabilities[:, model.classes_] = model.predict_proba(model_inputs(test, features)[0])
    return probabilities


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """ROC AUC macro-averaged one-vs-rest over the classes present in `labels` (NaN if fewer than two)."""
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    return float(np.mean([roc_auc_score(labels == c, probabilities[:, c]) for c in present]))


def _rmse(train: Table, test: Table, target: Column, features: list[str], seed: int) -> float:
    train = train.rows(~np.isnan(train[target.name]))
    test = test.rows(~np.isnan(test[target.name]))
    if len(train) == 0 or len(test) == 0:
        return float("nan")
    x_train, categorical = model_inputs(train, features)
    model = boosting(False, categorical, seed).fit(x_train, train[target.name])
    errors = model.predict(model_inputs(test, features)[0]) - test[target.name]
    return float(np.sqrt(np.mean(errors**2)))


def _held_out_score(train: Table, heldout: Table, target: Column, features: list[str], seed: int) -> float:
    if target.numeric:
        return _rmse(train, heldout, target, features, seed)
    probabilities = _class_probabilities(train, heldout, target, features, seed)
    return macro_auc(np.asarray(heldout[target.name], dtype=np.int64), probabilities)


def ml_efficiency(train_real: Table, heldout: Table, synth: Table, target: str, seed: int = 0) -> Efficiency:
    """Held-out score of a model predicting `target` trained on the real training rows and on the synthetic rows."""
    schema = same_schema(train_real, heldout, synth)
    column = schema.column(target)
    features = [name for name in schema.names if name != target]
    if not features:
        raise ValueError("ml_efficiency needs at least one column besides the target")
    real = _held_out_score(train_real, heldout, column, features, seed)
    synthetic = _held_out_score(synth, heldout, column, features, seed)
    return Efficiency(real, synthetic, "rmse" if column.numeric else "roc_auc")


def _nearest(reference: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return NearestNeighbors(n_neighbors=1).fit(reference).kneighbors(queries)[0][:, 0]


def dcr_share(train: Table, heldout: Table, synth: Table, seed: int = 0) -> float:
    """Share of synthetic rows nearer to a training row than to any held-out row (ties half; 0.5 ideal)."""
    same_schema(train, heldout, synth)
    embed = Embedding(train)
    train, heldout = equal_rows(train, heldout, seed)
    queries = embed(synth)
    to_train, to_heldout = _nearest(embed(train), queries), _nearest(embed(heldout), queries)
    return float(np.mean((to_train < to_heldout) + 0.5 * (to_train == to_heldout)))
