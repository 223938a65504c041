"""Sample-quality metrics between two feature or sample sets ([N, D] Tensor or ndarray)."""

from .energy import energy_distance
from .inception_score import inception_score, modified_inception_score
from .frechet import feature_stats, frechet_distance, frechet_from_stats
from rediffuse.audio.levels import FLOOR_DB, Levels, clip_peak, clip_rms, frame_db, levels
from .level_match import QUANTILES, LevelMatch, level_match
from .kid import kernel_inception_distance, polynomial_kernel
from .mmd import median_distance, mmd_rbf, rbf_kernel, unbiased_mmd2
from .prdc import density_coverage, precision_recall, prdc
from .sliced import sliced_wasserstein, wasserstein_1d_pp

__all__ = [
    "FLOOR_DB",
    "LevelMatch",
    "Levels",
    "QUANTILES",
    "clip_peak",
    "clip_rms",
    "frame_db",
    "level_match",
    "levels",
    "density_coverage",
    "energy_distance",
    "feature_stats",
    "frechet_distance",
    "frechet_from_stats",
    "inception_score",
    "kernel_inception_distance",
    "median_distance",
    "modified_inception_score",
    "mmd_rbf",
    "polynomial_kernel",
    "precision_recall",
    "prdc",
    "rbf_kernel",
    "sliced_wasserstein",
    "unbiased_mmd2",
    "wasserstein_1d_pp",
]
