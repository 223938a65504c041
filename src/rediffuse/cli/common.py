"""What every verb module of the command line shares: the program's name and exit codes."""

import argparse
import math

from rediffuse.distributed import pick_device

PROG = "rediffuse"
INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT)


def device_name(text: str) -> str:
    """An argparse type: a device name that exists here ('auto' resolved: cuda, mps or cpu)."""
    try:
        return str(pick_device(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def finite_float(text: str) -> float:
    """An argparse type: a finite float (NaN and infinities are refused with the flag's usual message)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def thread_count(text: str) -> int | None:
    """An argparse type: a CPU thread count >= 1, or 'auto' (None: `rediffuse.threads.auto_threads` chooses)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto', got {text!r}")
    return value
