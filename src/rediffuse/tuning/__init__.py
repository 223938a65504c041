"""Fitting sampling to a model: Gaussian teleport, tuned grids, learned coefficients, fitted jump, benchmarks."""
