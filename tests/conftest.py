"""Shared test settings: float64 math where asked, two CPU threads."""

import torch

torch.set_num_threads(2)
