"""How a command meets its user: logging (psqe-ray's progress at INFO, other libraries at
WARNING), no credential in any printed or logged line, errors as one line with exit status 2,
and the checks a command runs before any heavy import (:func:`preflight`)."""

from __future__ import annotations

import argparse
import logging
import sys

from psqe_ray.errors import PsqeError, user_error

log = logging.getLogger("psqe_ray")


def setup_logging(quiet: bool) -> None:
    """Progress from psqe-ray at INFO; other libraries (botocore, ...) only at WARNING."""
    import warnings

    # torch_geometric triggers torch.jit's deprecation notice at import: not the user's concern
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RedactFilter) for f in handler.filters):
            handler.addFilter(_RedactFilter())


def _redact(text) -> str:
    from psqe_ray.io.fs import redact

    return redact(str(text))


class RedactingStream:
    """``sys.stdout`` without credentials (what the commands print: URLs of their outputs)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(_redact(text))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _RedactFilter(logging.Filter):
    """No credential (a URL's user:password, an AWS key) in any log line (fs.redact)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = _redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line ``error: <prog>: <problem>`` with exit status 2, like every
    other error (argparse's default prints the usage first); ``--help`` shows the usage."""

    def error(self, message: str):
        print(f"error: {self.prog}: {_redact(message)} (see --help)", file=sys.stderr)
        sys.exit(2)


def preflight(args: argparse.Namespace, cfg=None) -> None:
    """Checks that need no heavy import, before anything runs: the configuration's ranges,
    the dataset exists, the output lies apart from the dataset (and from the seeds)."""
    from psqe_ray.errors import DataError
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.fs import check_apart

    if cfg is not None:
        cfg.check()
    Dataset(args.dataset)
    out = getattr(args, "out", None)
    if out:
        from psqe_ray.io.fs import resolve
        from psqe_ray.io.lock import OutputLock

        fs, path = resolve(out)
        OutputLock(fs, path, out).probe()  # another run writing there: refused before any work
        check_apart(args.dataset, out)
        if getattr(args, "seeds", None):
            check_apart(args.seeds, out, what="the seeds")
    if getattr(args, "seeds", None):
        from psqe_ray.io.fs import exists, resolve

        fs, path = resolve(args.seeds)
        if not exists(fs, path, args.seeds):
            raise DataError(args.seeds, "no such file or folder")


def run_command(func, args: argparse.Namespace) -> int:
    """Run a command with logging set up; our errors become one line and exit code 2."""
    setup_logging(getattr(args, "quiet", False))
    stdout = sys.stdout
    sys.stdout = RedactingStream(stdout)  # the commands' JSON lines hold URLs too
    try:
        return func(args)
    except PsqeError as exc:
        # user_error: one line even when the error comes through Ray's task wrapper
        print(f"error: {_redact(user_error(exc) or exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - ours or storage through Ray's wrappers: one line
        line = user_error(exc)
        if line is None:
            raise
        print(f"error: {_redact(line)}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout
