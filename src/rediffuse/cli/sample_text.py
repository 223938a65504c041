"""The `rediffuse sample` flags that only text runs read (what they do: `rediffuse.modalities.text`)."""

from __future__ import annotations

import argparse

from rediffuse.samplers.masked import ORDERS


def add_text_flags(p: argparse.ArgumentParser) -> None:
    """The flags only text runs read."""
    p.add_argument("--length", type=int, default=None,
                   help="text runs: tokens per sample (default: the run's block length)")
    p.add_argument("--prompt", default=None, help="text runs: a fixed prefix of every sample")
    p.add_argument("--infill", default=None, metavar="TEMPLATE",
                   help="text runs: a template whose blank characters are filled, the rest kept exactly")
    p.add_argument("--blank", default="_", help="text runs: the blank character of --infill (default: _)")
    p.add_argument("--order", default="random", choices=ORDERS,
                   help="text runs: which masked tokens to reveal per step (default: random, the ancestral "
                        "sampler)")
