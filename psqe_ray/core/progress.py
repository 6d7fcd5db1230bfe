"""Progress of long loops on the driver: one log line every few seconds with the rate and the
time left, the same in-process and on Ray (where the training workers send their epochs to
the driver, :func:`psqe_ray.distributed.runtime.fit_on_ray`)."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("psqe_ray.progress")

EVERY = 10.0  # seconds between two progress lines of one loop


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class EpochProgress:
    """Log ``label: epoch D/T, loss L, R s/epoch, about M:SS left``: on the first epoch seen,
    then at most once per ``every`` seconds, and on the last.  The rate is timed from the first
    epoch seen, so neither start-up (the first epoch carries it) nor a resumed loop's earlier
    epochs distort the time left; the first line has no rate yet."""

    def __init__(self, label: str, every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.every, self.clock = label, every, clock
        self.first: tuple[int, float] | None = None  # (epoch, time) of the first update
        self.last_line: float | None = None
        self.lines = 0

    def update(self, done: int, total: int, loss: float | None = None) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (done, now)
        if not (self.last_line is None or now - self.last_line >= self.every or done >= total):
            return
        parts = [f"{self.label}: epoch {done}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        timed = done - self.first[0]
        if timed > 0:
            per = (now - self.first[1]) / timed
            parts.append(f"{per:.2f} s/epoch")
            if done < total:
                parts.append(f"about {_clock(per * (total - done))} left")
        log.info(", ".join(parts))
        self.last_line = now
        self.lines += 1
