"""Metrics of synthetic tables against real ones: column shapes, pair trends, fidelity, utility and privacy."""

from rediffuse.evaluation.tables.fidelity import PrecisionRecall, alpha_precision_beta_recall, classifier_two_sample
from rediffuse.evaluation.tables.shapes import Shapes, Trends, column_shapes, pair_trends, trend_matrix
from rediffuse.evaluation.tables.utility import Efficiency, dcr_share, ml_efficiency

__all__ = [
    "Efficiency",
    "PrecisionRecall",
    "Shapes",
    "Trends",
    "alpha_precision_beta_recall",
    "classifier_two_sample",
    "column_shapes",
    "dcr_share",
    "ml_efficiency",
    "pair_trends",
    "trend_matrix",
]
