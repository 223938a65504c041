"""Measuring models: probability-flow ODE log-likelihood, bits/dim on 8-bit data, DDPM's variational bound."""

from .bits import BitsPerDim, bits_from_log_prob, bits_per_dim, dequantize, to_levels
from .ode import ODELikelihood, log_likelihood, ode_likelihood
from .vlb import VLB, discretized_gaussian_log_prob, vlb_bits_per_dim

__all__ = ["BitsPerDim", "ODELikelihood", "VLB", "bits_from_log_prob", "bits_per_dim", "dequantize",
           "discretized_gaussian_log_prob", "log_likelihood", "ode_likelihood", "to_levels", "vlb_bits_per_dim"]
