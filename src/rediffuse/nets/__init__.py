"""Networks F(x, c_noise, cond=None), each rebuilt from a JSON config (`from_config`), by registry name."""

from torch import nn

from rediffuse.nets.embedding import ConditionEmbedding, NoiseEmbedding, sinusoidal_embedding
from rediffuse.nets.mlp import MLP
from rediffuse.nets.table import TableMLP, TableTransformer
from rediffuse.nets.transformer import Transformer
from rediffuse.nets.unet1d import UNet1D
from rediffuse.nets.unet2d import UNet2D

NETS: dict[str, type[nn.Module]] = {"mlp": MLP, "unet": UNet2D, "unet1d": UNet1D,
                                   "transformer": Transformer, "table-mlp": TableMLP,
                                   "table-transformer": TableTransformer}  # `--net NAME`

__all__ = ["NETS", "ConditionEmbedding", "MLP", "NoiseEmbedding", "TableMLP", "TableTransformer", "Transformer",
           "UNet1D", "UNet2D", "sinusoidal_embedding"]
