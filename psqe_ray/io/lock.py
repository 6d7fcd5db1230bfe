"""One writer per output: ``OUT/_LOCK``, held while a run writes into ``OUT``.

Two runs started with the same output URL would otherwise interleave their parts and race on
``_MANIFEST.json``.  :class:`OutputLock` makes the second one fail at once with one line naming
the lock (exit status 2), before it writes anything; the first one completes undisturbed.

* **Local paths**: ``fcntl.flock`` on ``OUT/_LOCK``.  The kernel releases it when the holder
  exits, even on SIGKILL, so a local lock is never stale: a file left by a killed run is
  simply taken over.  (On NFS ``flock`` is as good as the server's lock support.)
* **Object stores** (``s3://``, ``gs://``, ``memory://``, ...): ``OUT/_LOCK`` is created with a
  conditional write (S3: ``PUT`` with ``If-None-Match: *``, which S3 and moto's server honour;
  other backends: fsspec's exclusive create).  Exactly one of two concurrent creates succeeds.
  The holder deletes it when done.  A run killed with SIGKILL cannot, and leaves a **stale**
  lock: a later run on the same host takes it over when the recorded process is gone;
  elsewhere the refusal names the host, process and start time, and the lock must be deleted
  by hand (``OUT/_LOCK``) once no run is writing there.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import socket

import fsspec

from psqe_ray.errors import DestinationError
from psqe_ray.io.fs import is_local, join, one_line

LOCK = "_LOCK"
# tokens of the locks this process holds now: a lock naming this process with another token
# was left by one of its earlier writes whose release failed (the store was down), so it is
# stale too
_HELD: set[str] = set()


def _owner(token: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _describe(raw: bytes | None) -> str:
    try:
        o = json.loads(raw or b"")
        return f"pid {o['pid']} on {o['host']} since {o['since']}"
    except Exception:  # noqa: BLE001 - an unreadable or half-written lock
        return "another process"


class OutputLock:
    """The lock of the output at ``root`` (``url``: the same, for messages).

    ``acquire()`` raises :class:`DestinationError` when another run holds it; ``release()``
    gives it back (and removes ``OUT/_LOCK``).  Not re-entrant: one lock per output and process.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, url: str) -> None:
        self.fs, self.url = fs, url
        self.path = join(root, LOCK)
        self.where = join(url, LOCK)
        self.token = secrets.token_hex(8)
        self._fd: int | None = None
        self.held = False

    def _refuse(self, raw: bytes | None) -> DestinationError:
        return DestinationError(
            f"{self.url}: another run is writing to this output (lock {self.where} held by "
            f"{_describe(raw)}); wait for it to finish or choose another output")

    # -- local: flock ------------------------------------------------------------------------
    def _acquire_local(self) -> None:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raw = os.pread(fd, 4096, 0)
                os.close(fd)
                raise self._refuse(raw) from None
            # the previous holder may have unlinked the file between our open and flock:
            # then we hold a lock on a file nobody else will ever see; start again
            st = os.fstat(fd)
            try:
                cur = os.stat(self.path)
            except FileNotFoundError:
                cur = None
            if cur is None or (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_owner(self.token)).encode(), 0)
            self._fd = fd
            return

    # -- object stores: conditional create ---------------------------------------------------
    def _read(self) -> bytes | None:
        try:
            return self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001
            return None

    def _stale(self, raw: bytes | None) -> bool:
        """A lock left by a process of this host that no longer exists."""
        try:
            o = json.loads(raw or b"")
            if o["host"] != socket.gethostname():
                return False
            if int(o["pid"]) == os.getpid():
                return o.get("token") not in _HELD
            import psutil

            return not psutil.pid_exists(int(o["pid"]))
        except Exception:  # noqa: BLE001
            return False

    def _acquire_remote(self) -> None:
        data = json.dumps(_owner(self.token)).encode()
        for attempt in range(2):
            try:
                self.fs.pipe_file(self.path, data, mode="create")
                return
            except Exception as exc:  # noqa: BLE001 - S3: 412 PreconditionFailed as OSError
                try:
                    self.fs.invalidate_cache(self.path)
                except Exception:  # noqa: BLE001
                    pass
                raw = self._read()
                if raw is None:
                    raise DestinationError(f"{self.url}: cannot create the lock {self.where}: "
                                           f"{one_line(exc)}") from None
                if attempt == 0 and self._stale(raw):
                    self.fs.rm_file(self.path)
                    continue
                raise self._refuse(raw) from None

    # -- the interface -----------------------------------------------------------------------
    def probe(self) -> None:
        """Raise :class:`DestinationError` if another run holds the lock now; writes nothing
        (a cheap early check: :meth:`acquire` is what excludes a second writer)."""
        if is_local(self.fs):
            import fcntl

            try:
                fd = os.open(self.path, os.O_RDWR)
            except OSError:  # no lock file: nobody holds it
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                raise self._refuse(os.pread(fd, 4096, 0)) from None
            finally:
                os.close(fd)
            return
        raw = self._read()
        if raw is not None and not self._stale(raw):
            raise self._refuse(raw)

    def acquire(self) -> "OutputLock":
        if is_local(self.fs):
            self._acquire_local()
        else:
            self._acquire_remote()
        self.held = True
        _HELD.add(self.token)
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        _HELD.discard(self.token)
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while still holding it (see _acquire_local)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            return
        try:
            raw = self._read()
            if raw is not None and json.loads(raw).get("token") == self.token:
                self.fs.rm_file(self.path)
        except Exception:  # noqa: BLE001 - best effort: a leftover lock is reported, not lost
            pass
