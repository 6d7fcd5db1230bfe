"""Kill a running job at a chosen point, as a crash would: for tests of resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def run_until(cmd: list[str], marker: Path, *, what: str, env: dict | None = None,
              timeout: float = 240.0, poll: float = 0.05) -> None:
    """Start ``cmd`` in its own process group and SIGKILL the whole group (the driver and any
    embedded Ray) as soon as ``marker`` exists.  Fails when the job ends first or ``marker``
    does not appear within ``timeout`` seconds (``what`` names the awaited step)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the job ended before it could be killed ({what})")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached within {timeout:.0f} s")
            time.sleep(poll)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
