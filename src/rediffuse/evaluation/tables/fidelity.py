"""Fidelity of synthetic rows as a whole: alpha-precision / beta-recall and a classifier two-sample test.

Alpha-precision and beta-recall follow Alaa et al. 2022, "How Faithful is your Synthetic Data?", in a simplified
form: the rows are embedded by `Embedding` fitted on the real table (no learned one-class network), and a support is
a ball around a mean embedding. The real a-support, for a level a in (0, 1), is the ball around the real centre c_r
whose radius is the a-quantile of the real rows' distances to c_r (so it holds a share a of the real rows), and P_a
is the share of synthetic rows inside it. The synthetic b-support is the ball around the synthetic centre c_s whose
radius is the b-quantile of the synthetic rows' distances to c_s, and R_b is the share of real rows covered by it,
a real row counting as covered, as in the paper's k-NN estimator, when its nearest synthetic row lies inside the
b-support and no farther from it than its k-th nearest other real row (without that local test a sample collapsed
onto a few far-apart points would look diverse). For a faithful sample P_a = a and R_b is close to b (about
1 - 2^-k of it with equally many rows). The reported scores are the paper's integrated forms
IP = 1 - 2 * integral_0^1 |P_a - a| da and IR = 1 - 2 * integral_0^1 |R_b - b| db, each integral the mean over the
midpoints (i + 1/2) / steps of `steps` equal intervals; both lie in [0, 1], 1 ideal. A sample spread wider or
narrower than the data has low IP; a sample collapsed onto a small region or a few points has low IR. Everything is
deterministic (quantiles with linear interpolation, exact nearest neighbours, no sampling).

The classifier two-sample test (C2ST, Lopez-Paz and Oquab 2017) cuts both tables to the same row count, labels real
rows 0 and synthetic rows 1, and reports the ROC AUC of out-of-fold predicted probabilities of a histogram gradient
boosting classifier over `folds` shuffled stratified folds: 0.5 when the classifier cannot tell the rows apart,
near 1 when it always can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors

from rediffuse.data.table_types import Table
from rediffuse.evaluation.tables.encode import Embedding, boosting, equal_rows, model_inputs, same_schema


@dataclass(frozen=True)
class PrecisionRecall:
    """Integrated alpha-precision and beta-recall in [0, 1] (1 ideal)."""

    alpha_precision: float
    beta_recall: float


def _distances(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return np.sqrt(((points - centre) ** 2).sum(axis=1))


def integrated_coverage(support: np.ndarray, tested: np.ndarray, levels: np.ndarray) -> float:
    """1 - 2 * mean over `levels` of |share of `tested` distances within the level-quantile of `support` - level|."""
    radii = np.quantile(support, levels)
    shares = np.searchsorted(np.sort(tested), radii, side="right") / len(tested)
    return 1.0 - 2.0 * float(np.abs(shares - levels).mean())


def _covering_distances(real: np.ndarray, synth: np.ndarray, synth_centre: np.ndarray, k: int) -> np.ndarray:
    """Per real row, its nearest synthetic row's distance to `synth_centre` (inf if not within its k-NN radius)."""
    radii = NearestNeighbors(n_neighbors=k + 1).fit(real).kneighbors(real)[0][:, k]
    gaps, nearest = NearestNeighbors(n_neighbors=1).fit(synth).kneighbors(real)
    return np.where(gaps[:, 0] <= radii, _distances(synth[nearest[:, 0]], synth_centre), np.inf)


def alpha_precision_beta_recall(real: Table, synth: Table, steps: int = 50, k: int = 5) -> PrecisionRecall:
    """Integrated alpha-precision and beta-recall of the synthetic rows against the real rows."""
    same_schema(real, synth)
    if not 1 <= k < len(real):
        raise ValueError(f"need 1 <= k < real rows, got k={k} and {len(real)} rows")
    embed = Embedding(real)
    r, s = embed(real), embed(synth)
    levels = (np.arange(steps) + 0.5) / steps
    real_centre, synth_centre = r.mean(axis=0), s.mean(axis=0)
    precision = integrated_coverage(_distances(r, real_centre), _distances(s, real_centre), levels)
    recall = integrated_coverage(_distances(s, synth_centre), _covering_distances(r, s, synth_centre, k), levels)
    return PrecisionRecall(precision, recall)


def classifier_two_sample(real: Table, synth: Table, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC AUC of a gradient-boosting classifier telling real rows from synthetic ones."""
    schema = same_schema(real, synth)
    real, synth = equal_rows(real, synth, seed)
    if len(real) < folds:
        raise ValueError(f"need at least {folds} rows in each table, got {len(real)}")
    x_real, categorical = model_inputs(real, schema.names)
    x_synth, _ = model_inputs(synth, schema.names)
    features = np.concatenate([x_real, x_synth])
    labels = np.concatenate([np.zeros(len(real), dtype=np.int64), np.ones(len(synth), dtype=np.int64)])
    scores = np.zeros(len(labels))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        model = boosting(True, categorical, seed).fit(features[train], labels[train])
        scores[test] = model.predict_proba(features[test])[:, 1]
    return float(roc_auc_score(labels, scores))
