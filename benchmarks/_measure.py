"""Run a command in a child process and measure its wall time and peak RSS (Linux)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time


def run_measured(cmd: list[str], **kwargs) -> dict:
    """Run ``cmd``; return ``{"seconds", "peak_rss_bytes", "stdout"}`` for that child alone.

    Uses ``os.wait4`` so the peak resident set is the child's own (``ru_maxrss``), not the
    maximum over every child this process has run.  Raises SystemExit if the command fails.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_bytes": usage.ru_maxrss * 1024,
            "stdout": stdout}
