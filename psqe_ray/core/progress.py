"""Progress of long loops on the driver, the same in-process and on Ray: training epochs (the
Ray Train workers send theirs to the driver, :func:`psqe_ray.distributed.raytrain.fit_on_ray`),
rows encoded (``distributed/encode.py``), search shards done (``core/search.py``,
``distributed/psqe.py``).

Not on a terminal (a log file, a job's captured output): one line of the logger
``psqe_ray.progress`` on the first update, then at most one every :data:`EVERY` seconds, and on
the last.  On a terminal (the log lines go to a TTY: the command line's stderr, unless
redirected): one bar line redrawn in place (``\r``) at most every :data:`REDRAW` seconds; the
last update clears it and logs its line, so the outcome stays in the log.  Nothing is shown
when the logger is not enabled for INFO (``-q``)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, TextIO

log = logging.getLogger("psqe_ray.progress")

EVERY = 10.0  # seconds between two progress lines of one loop
REDRAW = 0.25  # seconds between two redraws of a terminal's bar
BAR = 20  # characters of the bar


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


_bar_on: list = [None]  # the stream that shows a bar now, if any (a one-item box)


def _clear_bar(stream: TextIO) -> None:
    """Clear the bar that ``stream`` shows, if it shows one."""
    if _bar_on[0] is stream:
        stream.write("\r\x1b[K")
        stream.flush()
        _bar_on[0] = None


class _ClearBar(logging.Filter):
    """On the terminal's log handler: a log line first clears the bar drawn there, so that it
    never starts after a bar's text (the bar comes back with the next update)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        _clear_bar(self.stream)
        return True


def _terminal() -> TextIO | None:
    """The terminal that this module's log lines reach (the stream of a handler of its logger
    or of one it propagates to), or None when they go elsewhere (a file, a test's capture)."""
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and _is_tty(stream) \
                    and handler.level <= logging.INFO:
                if not any(isinstance(f, _ClearBar) for f in handler.filters):
                    handler.addFilter(_ClearBar(stream))
                return stream
        logger = logger.parent if logger.propagate else None
    return None


def _rate(rate: float, unit: str) -> str:
    """``350 rows/s``, ``2.5 shards/s``; below one a second, the seconds per one: ``4.00
    s/shard``."""
    if rate >= 100:
        return f"{rate:,.0f} {unit}/s"
    if rate >= 1:
        return f"{rate:.1f} {unit}/s"
    return f"{1.0 / rate:.2f} s/{unit[:-1] if unit.endswith('s') else unit}"


class Progress:
    """Counted work: ``label: N of M unit (P%), R unit/s, about M:SS left`` (module doc for
    when it shows, and how).  Call :meth:`update` with the count done so far (or :meth:`add`
    with what was just done); the update that reaches ``total`` is the last.  The rate is timed
    from the reporter's making: work that arrives in bursts (an actor pool's blocks, shards
    that end together) gives a rate timed between two of them no meaning.  ``clock``,
    ``stream`` and ``tty`` are for tests.  Updates may come from another thread than the one
    that made the reporter (one at a time).
    """

    from_first = False  # time the rate from the first update (EpochProgress), not the start

    def __init__(self, label: str, total: int = 0, unit: str = "items", *,
                 every: float = EVERY, clock: Callable[[], float] = time.monotonic,
                 stream: TextIO | None = None, tty: bool | None = None,
                 redraw: float = REDRAW) -> None:
        self.label, self.total, self.unit = label, int(total), unit
        self.every, self.clock, self.redraw = every, clock, redraw
        if stream is None:
            stream = _terminal()  # where the log lines go, when that is a terminal
            tty = stream is not None if tty is None else tty
        elif tty is None:
            tty = _is_tty(stream)
        self._stream, self.tty = stream, tty
        self.started = clock()
        self.done = 0
        self.first: tuple[float, float] | None = None  # (count, time) of the first update
        self.last_line: float | None = None  # when the last line (or bar) was shown
        self.lines = 0  # log lines written
        self.draws = 0  # bar redraws (terminal)
        self.finished = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def elapsed(self) -> float:
        """Seconds since the reporter was made."""
        return self.clock() - self.started

    def add(self, n: float = 1, **fields) -> None:
        self.update(self.done + n, **fields)

    def update(self, done: float, total: float | None = None, **fields) -> None:
        """``done`` of ``total`` (default: the total given before) so far; ``fields`` go to
        :meth:`text` (an epoch's loss)."""
        now = self.clock()
        if total is not None:
            self.total = total
        self.done = done
        if self.first is None:
            self.first = (done, now)
        last = done >= self.total
        wait = self.redraw if self.tty else self.every
        if self.finished or not log.isEnabledFor(logging.INFO) or not (
                self.last_line is None or now - self.last_line >= wait or last):
            return
        text = self.text(done, self.total, self._per_second(done, now), now, last, **fields)
        self.last_line = now
        if self.tty and not last:
            self.stream.write(f"\r{self.bar(done, self.total)} {text}\x1b[K")
            self.stream.flush()
            _bar_on[0] = self.stream
            self.draws += 1
            return
        self._clear()
        log.info(text)
        self.lines += 1
        self.finished = last

    def close(self) -> None:
        """Clear a bar left on the terminal (work that stopped before its last update)."""
        self._clear()

    def _clear(self) -> None:
        if self.tty and not self.finished:
            _clear_bar(self.stream)

    def _per_second(self, done: float, now: float) -> float | None:
        """Units per second since the start (the first update: :attr:`from_first`); None
        before there is a timed unit."""
        first, t0 = self.first if self.from_first else (0, self.started)  # type: ignore[misc]
        if done <= first or now <= t0:
            return None
        return (done - first) / (now - t0)

    def bar(self, done: float, total: float) -> str:
        share = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        full = int(share * BAR)
        return "[" + "#" * full + "-" * (BAR - full) + "]"

    def text(self, done: float, total: float, per_second: float | None, now: float,
             last: bool, **fields) -> str:
        parts = [f"{self.label}: {done:,} of {total:,} {self.unit}"
                 + (f" ({100.0 * done / total:.0f}%)" if total > 0 else "")]
        if per_second:
            parts.append(_rate(per_second, self.unit))
            if not last:
                parts.append(f"about {_clock((total - done) / per_second)} left")
        if last:
            parts.append(f"{_clock(now - self.started)} in all")
        return ", ".join(parts)


class EpochProgress(Progress):
    """Training epochs: ``label: epoch D/T, loss L, R s/epoch, about M:SS left`` (when and how
    it shows: :class:`Progress`).  The rate is timed from the first epoch seen, so neither
    start-up (the first epoch carries it) nor a resumed loop's earlier epochs distort the time
    left; the first line has no rate yet."""

    from_first = True

    def __init__(self, label: str, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic, *,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        super().__init__(label, 0, "epochs", every=every, clock=clock, stream=stream, tty=tty)

    def update(self, done: int, total: int, loss: float | None = None) -> None:
        if done < total:
            self.finished = False  # a restarted worker group sends its epochs again
        super().update(done, total, loss=loss)

    def text(self, done: float, total: float, per_second: float | None, now: float,
             last: bool, loss: float | None = None) -> str:
        parts = [f"{self.label}: epoch {done}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if per_second:
            per = 1.0 / per_second
            parts.append(f"{per:.2f} s/epoch")
            if not last:
                parts.append(f"about {_clock(per * (total - done))} left")
        return ", ".join(parts)
