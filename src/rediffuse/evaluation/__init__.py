"""Measuring models: sample metrics, features (own classifiers, Inception), likelihood, and the `eval` report."""
