"""Shared test settings: one intra-op thread.

The tests make many small tensor calls; on a shared 2-core machine two OpenMP threads stall 10-100x under
load, and one thread also makes timings and float reductions repeatable.
"""

import torch

torch.set_num_threads(1)
