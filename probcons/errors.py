"""The exceptions probcons raises.

    ProbconsError                      everything probcons raises on purpose
    ├── UsageError (ValueError)        bad input: names the argument, what is allowed, what was given
    ├── SingularConstraintError (ValueError)
    │                                  G Sigma G^T + R is singular or a row is invisible to the prior
    └── ModelError (ValueError)        a user's Pyro model file failed to import or to run

The command line maps UsageError and ModelError to exit status 2 with one line on stderr;
anything else is a bug and keeps its traceback. Each subclasses ValueError, so code that
caught ValueError before still catches them.
"""

from __future__ import annotations


class ProbconsError(Exception):
    """Base of every exception probcons raises on purpose."""


class UsageError(ProbconsError, ValueError):
    """Bad input at the public boundary: the message names the argument."""


class SingularConstraintError(ProbconsError, ValueError):
    """An exact update is meaningless: S = G Sigma G^T + R is singular for the named row."""


class ModelError(ProbconsError, ValueError):
    """A user's Pyro model file failed to import or raised while it was traced."""


__all__ = ["ModelError", "ProbconsError", "SingularConstraintError", "UsageError"]
