"""Exception types.

Everything a *user* can cause (a bad grid, an unknown component name, an
environment dqnbench cannot train on) is a :class:`DqnbenchError`: the CLI turns
it into one line on stderr and exit code 2, never a traceback. Anything else is
a bug, either ours or a plugin's.
"""

from __future__ import annotations


class DqnbenchError(Exception):
    """An error the user can fix; its message is meant to be shown as is."""


class GridError(DqnbenchError):
    """A grid file that cannot be turned into runs.

    The message names the file, the offending key and, where it helps, the
    allowed values.
    """

    def __init__(self, path: object, key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


class UnknownComponentError(DqnbenchError):
    """A component name that no installed plugin provides."""


class DuplicateComponentError(DqnbenchError):
    """Two plugins provide the same (kind, name); the message names both."""


class ResultsError(DqnbenchError):
    """A results directory that cannot be read or written."""
