"""The `rediffuse` command line: one module per verb group."""

from rediffuse.cli.app import main

__all__ = ["main"]
