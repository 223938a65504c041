"""Denoiser networks."""

from rediffuse.nets.embedding import NoiseEmbedding, sinusoidal_embedding
from rediffuse.nets.unet2d import UNet2D

__all__ = ["NoiseEmbedding", "UNet2D", "sinusoidal_embedding"]
