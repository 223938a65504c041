"""`rediffuse serve RUN [RUN ...]`: a local page to watch and steer the runs' reverse processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rediffuse.errors import UsageError


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be a whole number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be in 0..65535, got {value}")
    return value


def add_parser(verbs: Any, common: argparse.ArgumentParser) -> None:
    """The `serve` verb."""
    p = verbs.add_parser("serve", parents=[common], help="a local page to watch and steer runs (points, images, "
                                                         "audio, text)",
                         description="Serve a page at http://127.0.0.1:PORT/: pick a run, set class, sampler, "
                                     "steps, guidance, seed and samples, and watch the reverse process stream in; "
                                     "compare two samplers on the same noise. It reads only the runs given and "
                                     "works offline.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (or checkpoints) to serve")
    p.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; another prints a warning)")
    p.add_argument("--device", default="cpu", help="device to sample on (default: cpu)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C."""
    from rediffuse.serve import serve

    missing = [str(r) for r in args.runs if not r.exists()]
    if missing:
        raise UsageError(f"run {missing[0]!r} does not exist; give the --out folder of a training run")
    try:
        serve(args.runs, args.host, args.port, args.device)
    except OSError as err:
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); choose another "
                         "--port (0 picks a free one)") from None
    return 0
