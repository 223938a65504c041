"""The `rediffuse` console script: the command line, where Ctrl-C while it starts (imports torch) also ends in
one line and exit code 130 rather than a traceback."""

from __future__ import annotations

import sys


def run() -> None:
    """Import the command line and run it; exit with its code."""
    try:
        from rediffuse.cli import main
    except KeyboardInterrupt:
        print("rediffuse: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(main())
