"""Errors that reach the user.

Every problem with input data is raised as a :class:`DataError` whose message names *where*
(a URL or file, optionally a line, column or key) and *what* is wrong, on one line.  The CLI
prints ``error: <message>`` and exits with status 2; nothing else is printed.
"""

from __future__ import annotations


class PsqeError(Exception):
    """Base class of every error psqe-ray raises on purpose."""


class DataError(PsqeError):
    """Bad input: a missing or malformed file, a broken reference, a bad vector, ...

    Args:
        where: the file or URL (and table) the problem is in.
        problem: what is wrong, in a few words.
        line: 1-based line number in a text file, when known.
        column: column (Arrow field) or key, when known.
    """

    def __init__(self, where: str, problem: str, *, line: int | None = None,
                 column: str | None = None) -> None:
        loc = str(where)
        if line is not None:
            loc += f":{line}"
        if column is not None:
            loc += f" [{column}]"
        self.where = str(where)
        self.line = line
        self.column = column
        self.problem = problem
        super().__init__(f"{loc}: {problem}")


class NothingToEncode(DataError):
    """A modality asked of an encoder has no text in either graph."""


class DestinationError(PsqeError):
    """The output location cannot be used (holds another dataset, unreachable, ...)."""


class ConfigError(PsqeError):
    """A configuration value is unknown or out of range."""
