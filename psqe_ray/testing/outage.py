"""A storage server that goes away on cue: a TCP proxy in front of an S3 endpoint, for tests of
what a job does when its store stops in the middle of a write.

The job under test talks to the proxy (``AWS_ENDPOINT_URL`` = :attr:`Outage.endpoint`); the
proxy forwards every connection to the real server (moto's, on loopback) until it is told to
cut.  From the job's side a cut is the server stopping: open connections are reset, new ones
are refused (closed on accept) until :meth:`Outage.restore`.  A cut can be armed on a request:
:meth:`Outage.cut_at` watches the request lines the clients send (``PUT /bucket/key HTTP/1.1``)
and cuts before forwarding the first one that matches, so the job is stopped exactly at a
chosen write; :meth:`Outage.cut_after` cuts once a number of bytes went upstream (a write cut
part way through its body).  :meth:`Outage.hang_at` is the other way a store fails: a hung
server, which keeps accepting connections and requests from the chosen one on but never
answers, nor closes anything.  Threads and sockets only; the proxy never parses more than
request lines.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD|PATCH|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


class Outage:
    """A TCP proxy on ``127.0.0.1`` to ``upstream`` (``http://host:port``) that can cut.

    Use as a context manager or call :meth:`close`.  Attributes: ``endpoint`` (the URL to give
    the job), ``requests`` (every request line seen, as ``"METHOD /path"``), ``cut_request``
    (the request line that triggered an armed cut, else None).
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self._upstream = (host, int(port))
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._down = False
        self._hanging = False  # hung: requests are swallowed, never forwarded nor answered
        self._hang = False     # the armed predicate hangs instead of cutting
        self._predicate: Callable[[str, str], bool] | None = None
        self._budget: int | None = None
        self.requests: list[str] = []
        self.cut_request: str | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, name="outage-accept", daemon=True).start()

    # -- control ------------------------------------------------------------------------------
    def cut(self) -> None:
        """Stop now: reset every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            self._down = True
            conns, self._conns = list(self._conns), set()
        for s in conns:
            _reset(s)

    def cut_at(self, predicate: Callable[[str, str], bool]) -> None:
        """Arm a cut at the first request ``predicate(method, path)`` accepts (``path`` as in
        the request line, e.g. ``/bucket/out/align/alignment.parquet?...``): that request is
        never forwarded, and the store is down from then on."""
        with self._lock:
            self._predicate, self._hang, self.cut_request = predicate, False, None

    def hang_at(self, predicate: Callable[[str, str], bool]) -> None:
        """Arm a hang at the first request ``predicate(method, path)`` accepts: from that
        request on (``cut_request``), nothing the clients send is forwarded or answered, and
        no connection is closed, until :meth:`restore`; a connection that hung stays hung."""
        with self._lock:
            self._predicate, self._hang, self.cut_request = predicate, True, None

    def cut_after(self, nbytes: int) -> None:
        """Arm a cut once ``nbytes`` more bytes went from the clients to the server."""
        with self._lock:
            self._budget = int(nbytes)

    def restore(self) -> None:
        """The server is back: forward again, nothing armed."""
        with self._lock:
            self._down = self._hanging = self._hang = False
            self._predicate = self._budget = None

    @property
    def down(self) -> bool:
        return self._down

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self) -> "Outage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- forwarding ---------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self._upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""  # the end of the previous chunk: a request line may span two reads
        hung = False  # this connection's requests are swallowed from now on
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._down:
                    break
                if upstream and not hung:
                    if self._check(tail + data, len(data)) and not self._hanging:
                        break
                    hung = self._hanging
                if hung:
                    continue
                dst.sendall(data)
                tail = data[-512:] if upstream else b""
        except OSError:
            pass
        finally:
            if self._down or not upstream:
                _reset(src)
                _reset(dst)
            else:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def _check(self, data: bytes, size: int) -> bool:
        """Record request lines; True when an armed cut or hang fires on this chunk."""
        fire = False
        with self._lock:
            for m in _REQUEST_LINE.finditer(data):
                line = f"{m.group(1).decode()} {m.group(2).decode(errors='replace')}"
                if m.end() <= len(data) - size:  # seen with the previous chunk already
                    continue
                self.requests.append(line)
                if self._predicate is not None and self._predicate(*line.split(" ", 1)):
                    self.cut_request, fire = line, True
            if self._budget is not None:
                self._budget -= size
                fire = fire or self._budget <= 0
        if fire and self._hang:
            self._hanging = True
        elif fire:
            self.cut()
        return fire


def _reset(s: socket.socket) -> None:
    """Close ``s`` with a reset (RST), as a server that went away does."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


__all__ = ["Outage"]


@contextmanager
def silent_server(path: str = "/") -> Iterator[str]:
    """An ``http://127.0.0.1:PORT{path}`` URL whose server accepts every connection and never
    answers (a hung image host); closed on exit."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}{path}"
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()
