"""Denoiser networks."""

from rediffuse.nets.embedding import ConditionEmbedding, NoiseEmbedding, sinusoidal_embedding
from rediffuse.nets.mlp import MLP
from rediffuse.nets.unet2d import UNet2D

__all__ = ["ConditionEmbedding", "MLP", "NoiseEmbedding", "UNet2D", "sinusoidal_embedding"]
