"""Exceptions the engine raises on purpose, each with the exit code the CLI maps it to.

DESIGN.md: 0 ok; 1 error; 2 usage error; 3 an artifact is missing; 4 a file is corrupt or
unsafe; 130 interrupted. Every message is one line a user can act on.
"""

from __future__ import annotations


class GencbmError(Exception):
    """A failure with a clear one-line message (exit code 1)."""

    exit_code = 1


class UsageError(GencbmError):
    """Bad option values or combinations (exit code 2)."""

    exit_code = 2


class ArtifactMissingError(GencbmError):
    """A model or file is not in the store or on disk (exit code 3).

    The message names the `gencbm download ...` command that fetches it.
    """

    exit_code = 3


class CorruptFileError(GencbmError):
    """A file is malformed, truncated or unsafe to load (exit code 4)."""

    exit_code = 4


class OpBuildError(GencbmError):
    """A CUDA op could not be built or loaded."""

    exit_code = 1


class Interrupted(GencbmError):
    """Stopped by SIGINT/SIGTERM after saving what could be saved (exit code 130)."""

    exit_code = 130
