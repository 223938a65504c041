"""Feature extractors for sample metrics: a self-trained digit classifier and FID's Inception-v3."""

from .cache import cache_root, load_or_train_classifier
from .classifier import (
    CONFIGS,
    ClassifierConfig,
    DigitClassifier,
    accuracy,
    class_histogram,
    classify,
    extract_features,
    probabilities,
)
from .inception import (
    InceptionFeatures,
    InceptionV3,
    InceptionWeightsError,
    check_inception_weights,
    convert_inception_weights,
    load_inception,
)
from .training import REQUIRED_ACCURACY, SETTINGS, TrainSettings, load_split, train_classifier

__all__ = [
    "CONFIGS",
    "REQUIRED_ACCURACY",
    "SETTINGS",
    "ClassifierConfig",
    "DigitClassifier",
    "InceptionFeatures",
    "InceptionV3",
    "InceptionWeightsError",
    "TrainSettings",
    "accuracy",
    "cache_root",
    "check_inception_weights",
    "class_histogram",
    "classify",
    "convert_inception_weights",
    "extract_features",
    "load_inception",
    "load_or_train_classifier",
    "load_split",
    "probabilities",
    "train_classifier",
]
