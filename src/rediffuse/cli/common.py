"""What every verb module of the command line shares: the program's name and exit codes."""

import argparse
import math

PROG = "rediffuse"
INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT)


def finite_float(text: str) -> float:
    """An argparse type: a finite float (NaN and infinities are refused with the flag's usual message)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value
