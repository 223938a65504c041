"""`rediffuse <verb>`: the parser of every verb, and errors as one line with an exit code.

Errors are one line, `rediffuse: error: ...`, and so is each warning (`rediffuse: warning: ...`), on
stderr: exit code 2 for usage errors (flags, config files, paths), 1 for runtime errors (bad data, corrupt
checkpoints); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from typing import Iterator, Sequence

import torch

from rediffuse import __version__
from rediffuse.cli import distill, edit, evaluate, sample, serve, train, tune
from rediffuse.cli.common import INTERRUPTED, PROG, thread_count
from rediffuse.errors import ConfigError, ParseError, UsageError
from rediffuse.threads import auto_threads, cpu_threads, governed

VERBS = ("train", "sample", "edit", "invert", "demo", "distill", "eval", "bench-samplers", "tune-grid", "serve")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParseError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ParseError(message)


def build_parser() -> _Parser:
    """The `rediffuse` argument parser with its sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")
    common.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help="CPU threads for torch (default: auto: one per core, less the cores other "
                             "processes keep busy, looked at again at every training log interval)")
    parser = _Parser(prog=PROG, parents=[common], description="Diffusion models as one denoiser D(x, sigma).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="{" + ",".join(VERBS) + "}", parser_class=_Parser)
    verbs.required = True
    train.add_parsers(verbs, common)
    distill.add_parser(verbs, common)
    sample.add_parser(verbs, common)
    edit.add_parsers(verbs, common)
    evaluate.add_parser(verbs, common)
    tune.add_parsers(verbs, common)
    serve.add_parser(verbs, common)
    return parser


def _one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def thread_policy(threads: int | None) -> Iterator[None]:
    """N threads for the command, or (None: auto) the count the load allows, revisited while training."""
    if threads is not None:
        with cpu_threads(threads):
            yield
        return
    ceiling = torch.get_num_threads()
    with cpu_threads(auto_threads()), governed(ceiling):
        yield


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print each warning as one line, `rediffuse: warning: ...`, while the command runs (the Python API keeps
    the `warnings` module's own format and filters)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 (warnings' hook)
        print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `rediffuse` command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with one_line_warnings(), thread_policy(args.threads):
            return args.func(args)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except (UsageError, ConfigError) as err:
        if debug:
            raise
        verb = next((a for a in argv if a in VERBS), None)
        hint = f" (see '{PROG}{' ' + verb if verb else ''} --help')" if isinstance(err, ParseError) else ""
        print(f"{PROG}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, RuntimeError) as err:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        print(f"{PROG}: error: unexpected {type(err).__name__}: {_one_line(err)} (rerun with --debug for the "
              "traceback and please report it)", file=sys.stderr)
        return 1
