"""The exceptions probcons raises.

    ProbconsError                      everything probcons raises on purpose
    ├── UsageError (ValueError)        bad input: names the argument, what is allowed, what was given
    ├── SingularConstraintError (ValueError)
    │                                  G Sigma G^T + R is singular or a row is invisible to the prior
    ├── ConvergenceError (ValueError)  an iteration (nonlinear sites) missed its tolerance
    ├── ModelError (ValueError)        a user's Pyro model file failed to import or to run
    └── OutputError (OSError)          an output file or folder could not be written (disk full,
                                       busy, name too long, permission denied)

The command line maps the four ValueError kinds to exit status 2 with one line on stderr, and
OutputError to exit status 74 (EX_IOERR) with one line; anything else is a bug and keeps its
traceback. The first four subclass ValueError, so code that caught ValueError before still
catches them; OutputError subclasses OSError and keeps the errno, strerror and filename.
"""

from __future__ import annotations


class ProbconsError(Exception):
    """Base of every exception probcons raises on purpose."""


class UsageError(ProbconsError, ValueError):
    """Bad input at the public boundary: the message names the argument."""


class SingularConstraintError(ProbconsError, ValueError):
    """An exact update is meaningless: S = G Sigma G^T + R is singular for the named row."""


class ConvergenceError(ProbconsError, ValueError):
    """An iteration stopped short of its tolerance: the message names the site (and the draw)
    and the residual reached."""


class ModelError(ProbconsError, ValueError):
    """A user's Pyro model file failed to import or raised while it was traced."""


class OutputError(ProbconsError, OSError):
    """Writing an output failed: OutputError(errno, strerror, filename), filename the output the
    user named (the run directory or report), not the hidden file being written."""

    def __str__(self) -> str:
        return f"cannot write {str(self.filename)!r}: {self.strerror}"


__all__ = [
    "ConvergenceError",
    "ModelError",
    "OutputError",
    "ProbconsError",
    "SingularConstraintError",
    "UsageError",
]
