"""Wall seconds and peak resident memory of one step of a run (report.json ``profile``).

The peak of a step is this process's: when the step raised the process's high-water mark
(``getrusage`` ``ru_maxrss``) the new mark is the step's exact peak; otherwise (an earlier step
went higher) it is the largest resident size seen by a sampler thread that reads
``/proc/self/statm`` every ``interval`` seconds during the step (``sampled`` is then True: a
spike shorter than the interval can be missed).  Where ``/proc`` is absent only the
high-water mark is known and a step under it reports None.
"""

from __future__ import annotations

import os
import resource
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def high_water_bytes() -> int:
    """This process's peak resident size so far (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int | None:
    """This process's resident size now (None where ``/proc/self/statm`` is absent)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class StepMeter:
    """``with StepMeter() as m: ...``; then ``m.record()`` -> ``{"seconds", "peak_rss_bytes",
    "peak_rss_sampled"}``."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.seconds = 0.0
        self.peak_rss_bytes: int | None = None
        self.sampled = False

    def __enter__(self) -> "StepMeter":
        self._hw0 = high_water_bytes()
        now = current_rss_bytes()
        self._seen = now or 0
        self._stop = threading.Event()
        self._thread = None
        if now is not None:
            self._thread = threading.Thread(target=self._sample, name="step-meter", daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            now = current_rss_bytes()
            if now is not None and now > self._seen:
                self._seen = now
        return None

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = current_rss_bytes()
        if now is not None:
            self._seen = max(self._seen, now)
        hw = high_water_bytes()
        if hw > self._hw0:  # (the sampled sizes can pass it by a few pages of counter lag)
            self.peak_rss_bytes, self.sampled = max(hw, self._seen), False
        elif self._seen:
            self.peak_rss_bytes, self.sampled = self._seen, True
        return None

    def record(self) -> dict:
        return {"seconds": round(self.seconds, 3), "peak_rss_bytes": self.peak_rss_bytes,
                "peak_rss_sampled": self.sampled}
