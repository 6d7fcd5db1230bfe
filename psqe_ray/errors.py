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

    def __reduce__(self):
        # raised in a Ray task or Ray Train worker, it crosses processes pickled: rebuild it
        # from its parts (the default would call __init__ with the formatted message alone)
        return (_rebuild_data_error, (type(self), self.where, self.problem, self.line,
                                      self.column))


def _rebuild_data_error(cls, where, problem, line, column):
    return cls(where, problem, line=line, column=column)


class NothingToEncode(DataError):
    """A modality asked of an encoder has no text in either graph."""


class DestinationError(PsqeError):
    """The output location cannot be used (holds another dataset, unreachable, ...)."""


class ConfigError(PsqeError):
    """A configuration value is unknown or out of range."""


def one_line(exc: BaseException) -> str:
    """An exception as a single short line (botocore and aiohttp messages span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


# modules whose exceptions are a storage request that failed (the object store, its client)
_STORAGE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "gcsfs", "urllib3")


def _chain(exc: BaseException):
    """``exc`` and what it wraps, outermost first: ``__cause__``/``__context__`` and Ray's
    wrappers (a task's error keeps the original as ``cause``, Ray Train's as
    ``worker_failures`` / ``controller_failure``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = [getattr(e, "cause", None), getattr(e, "controller_failure", None),
                   *(getattr(e, "worker_failures", None) or {}).values()]
        todo[:0] = [w for w in wrapped if isinstance(w, BaseException)]
        todo += [e.__cause__, e.__context__]


def _is_wrapper(e: BaseException) -> bool:
    """Ray's task error posing as its cause's class (``as_instanceof_cause``): its text is the
    remote traceback, the cause is the error to show."""
    return isinstance(getattr(e, "cause", None), BaseException)


def user_error(exc: BaseException) -> str | None:
    """The one line to show for ``exc``, when it is (or wraps, through Ray's task and Ray
    Train's errors) an error psqe-ray raised on purpose, or a storage request that failed;
    None for anything else (a bug: the traceback is the useful report)."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, PsqeError) and not _is_wrapper(e):
            return " ".join(str(e).split())
    for e in chain:
        if _is_wrapper(e):
            continue
        if type(e).__module__.split(".")[0] in _STORAGE_MODULES:
            return f"storage request failed: {one_line(e)}"
    return None
