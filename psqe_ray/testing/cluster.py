"""A real multi-node Ray cluster on this machine, for tests of ``ray job submit`` and of a lost
node: a head and worker nodes, each a ``ray start --block`` in its own session (process
group), so that one node's processes (raylet, agents, workers) can be killed together as when
the machine goes, and a fresh node added.

Jobs go in with ``ray job submit``, as users submit them; their state, logs and the cluster's
nodes come from the head's dashboard (its REST API). Only ``psqe_ray.distributed`` imports
``ray`` (tests/test_layers.py): this module drives the ``ray`` command and HTTP only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# with ``fast_node_failure``, the head marks a node dead after 5 failed health checks a second
# apart (a killed node refuses them at once): ~5 s instead of Ray's ~15 s; a live node gets
# 5 s to answer each check, so a busy machine does not lose one by mistake
FAST_NODE_FAILURE = {"RAY_health_check_period_ms": "1000",
                     "RAY_health_check_timeout_ms": "5000",
                     "RAY_health_check_failure_threshold": "5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(pid: int) -> list[int]:
    """Every live process of the session that ``pid`` leads, and its descendants."""
    import psutil

    found = set()
    try:
        found.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        found.add(pid)
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == pid:
                found.add(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return sorted(found)


class LocalCluster:
    """A head (``head_cpus`` CPUs, the dashboard and its job server) and one worker node per
    entry of ``worker_cpus``, on ports of their own (other Ray instances on this machine keep
    theirs) and a temporary folder of their own.  ``env`` is the nodes' environment (the
    jobs' too); ``log_dir`` keeps the jobs' logs; ``fast_node_failure``: a lost node is
    noticed in seconds (tests of node loss).  Use as a context manager, or call
    :meth:`stop`."""

    def __init__(self, head_cpus: float = 1, worker_cpus: tuple[float, ...] = (1,), *,
                 env: dict | None = None, log_dir: str | Path | None = None,
                 fast_node_failure: bool = False, start_timeout: float = 120.0) -> None:
        self.gcs, self.dash = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.dash}"
        self.temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths
        self.log_dir = Path(log_dir or self.temp) / "job-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ray_bin = str(Path(sys.executable).parent / "ray")
        base = dict(os.environ if env is None else env)
        self.env = {**base, "RAY_AUTH_MODE": "disabled",
                    **(FAST_NODE_FAILURE if fast_node_failure else {}),
                    "PATH": f"{Path(sys.executable).parent}:{base.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[subprocess.Popen | None] = []  # [0] is the head; None: killed
        self.start_timeout = start_timeout
        try:
            self._start(["--head", f"--port={self.gcs}", "--include-dashboard=true",
                         f"--dashboard-port={self.dash}", "--dashboard-host=127.0.0.1",
                         f"--temp-dir={self.temp}"], head_cpus)
            self._until(lambda: bool(self._alive()), "the head")
            for cpus in worker_cpus:
                self.add_node(cpus)
        except BaseException:
            self.stop()
            raise

    # -- nodes -----------------------------------------------------------------------------------
    def _start(self, args: list[str], cpus: float) -> int:
        ports = [f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}",
                 f"--metrics-export-port={free_port()}"]
        log = open(Path(self.temp) / f"node-{len(self.nodes)}.log", "wb")
        proc = subprocess.Popen([self.ray_bin, "start", "--block", f"--num-cpus={cpus}",
                                 *args, *ports], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.nodes.append(proc)
        return len(self.nodes) - 1

    def add_node(self, cpus: float = 1) -> int:
        """Start a worker node and wait until the head counts it alive; returns its index."""
        before = self._alive()  # a node killed a moment ago may still be counted here
        # a temporary folder of its own: a node's runtime-env agent clears the folder's
        # runtime resources when it starts, and the driver's working directory is there
        temp = os.path.join(self.temp, f"n{len(self.nodes)}")
        i = self._start([f"--address=127.0.0.1:{self.gcs}", f"--temp-dir={temp}"], cpus)
        self._until(lambda: bool(self._alive() - before), f"node {i}")
        return i

    def kill_node(self, i: int) -> list[int]:
        """SIGKILL every process of node ``i`` at once (its ``ray start``, raylet, agents and
        workers), as when its machine is lost.  Returns the pids killed."""
        proc = self.nodes[i]
        if proc is None:
            return []
        pids = _session(proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        self.nodes[i] = None
        return pids

    def processes(self, i: int, pattern: str) -> list[int]:
        """Pids of node ``i``'s processes whose command line (Ray sets it to the actor or task,
        e.g. ``ray::RayTrainWorker``) contains ``pattern``."""
        import psutil

        proc = self.nodes[i]
        found = []
        for pid in _session(proc.pid) if proc is not None else []:
            try:
                if pattern in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                pass
        return found

    def node_list(self) -> list[dict]:
        """The head's node table (``node_id``, ``state``, ``resources_total``, ...)."""
        got = self._get("/api/v0/nodes?limit=1000&detail=true")
        return got["data"]["result"]["result"]

    def node_ids(self) -> set[str]:
        """Ids of the nodes the head counts alive."""
        return {n["node_id"] for n in self.node_list() if n["state"] == "ALIVE"}

    def _alive(self) -> set[str]:
        try:
            return self.node_ids()
        except (OSError, KeyError, ValueError):
            return set()  # the dashboard is still coming up

    def _until(self, cond, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not cond():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {self.start_timeout:.0f} s "
                                   f"(logs in {self.temp})")
            time.sleep(0.5)

    # -- jobs ------------------------------------------------------------------------------------
    def submit(self, name: str, argv: list[str], *, wait: bool = True, limit: float = 240.0,
               working_dir: str | Path = REPO) -> str | dict:
        """``ray job submit -- python ARGV`` with the repository as the working directory.
        ``wait``: wait for the job's end, check it SUCCEEDED (AssertionError with the end of
        its log otherwise) and return its details (``driver_node_id``, ...); else return its
        submission id at once (see :meth:`wait`)."""
        job = f"psqe-{name}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        cmd = [self.ray_bin, "job", "submit", f"--address={self.url}", "--no-wait",
               f"--submission-id={job}", f"--working-dir={working_dir}", "--", "python", *argv]
        for _ in range(60):  # the job server and the agents take a while to come up
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                                  timeout=120)
            if proc.returncode == 0:
                break
            time.sleep(2)
        if proc.returncode != 0:
            raise RuntimeError(f"ray job submit failed: {proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        if not wait:
            return job
        info = self.wait(job, limit)
        assert info["status"] == "SUCCEEDED", \
            f"job {info['status']}: {info.get('message')}\n{self.logs(job)[-4000:]}"
        return info

    def wait(self, job: str, limit: float = 240.0) -> dict:
        """Wait until the job ends (at most ``limit`` seconds; it is stopped then) and return
        its details; its log is kept in ``log_dir/<job>.log``."""
        deadline = time.monotonic() + limit
        info = self.job(job)
        while info["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                self._post(f"/api/jobs/{job}/stop")
                info = {**self.job(job), "status": "TIMEOUT"}
                break
            time.sleep(1)
            info = self.job(job)
        (self.log_dir / f"{job}.log").write_text(self.logs(job))
        return info

    def job(self, job: str) -> dict:
        return self._get(f"/api/jobs/{job}")

    def logs(self, job: str) -> str:
        try:
            return self._get(f"/api/jobs/{job}/logs")["logs"]
        except (OSError, KeyError, ValueError) as exc:
            return f"(no logs: {exc})"

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def _post(self, path: str) -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(self.url + path, data=b"",
                                                          method="POST"), timeout=30).close()
        except (OSError, urllib.error.HTTPError):
            pass

    # -- the end ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill every node this cluster started (workers first) and remove its folder."""
        for i in reversed(range(len(self.nodes))):
            self.kill_node(i)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
