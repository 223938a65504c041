"""The project's exception types: what the command line turns into one-line errors and exit codes.

Usage errors (`UsageError`, `ConfigError`) exit with 2, runtime errors (`CheckpointError`, `NonFiniteError`, and
any `ValueError`, `OSError` or `RuntimeError`) with 1.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line, config file or path (exit code 2)."""


class ParseError(UsageError):
    """A command line that argparse rejects."""


class ConfigError(ValueError):
    """An invalid training configuration (a usage error)."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt or not a rediffuse checkpoint."""


class NonFiniteError(RuntimeError):
    """Training stopped: too many steps in a row had a non-finite loss or gradient."""


class RunInUseError(RuntimeError):
    """Another process is training into the same run folder (exit code 1)."""
