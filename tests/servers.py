r"""Test helpers: start and stop a real ``redis-server`` and ``abc-redis-worker`` processes and
a local Dask cluster, and read a pyabc database while a run writes it.

Every process started here is tracked by its own :class:`subprocess.Popen` and ended by its
pid (``terminate``, then ``kill`` after a grace period), never by name. ``redis-server`` runs on
the loopback interface, on a free port, without persistence (``--save "" --appendonly no``),
with its working directory in the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

__all__ = [
    "REDIS_SERVER",
    "dask_client",
    "close_dask",
    "free_port",
    "wait_until",
    "stop_process",
    "RedisServer",
    "start_redis_workers",
    "max_generation",
    "worker_environment",
]

REDIS_SERVER = shutil.which("redis-server")
_HOST = "127.0.0.1"


_DASK: list = []  # the running (cluster, client)


def dask_client() -> Any:
    """The client of the running local Dask cluster of two single-threaded worker processes,
    started on the first call (spawned processes that import torch take seconds) and after
    :func:`close_dask`. The tests that use it run one after the other on one pytest worker
    (their ``dask`` group) and ``tests/conftest.py`` closes it after the last of them: idle,
    its processes keep spending CPU time, about 3 s a minute, beside the rest of the suite."""
    import distributed

    if not _DASK:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        _DASK.extend((cluster, distributed.Client(cluster)))
    return _DASK[1]


def close_dask() -> None:
    """Close the cluster of :func:`dask_client`, if one is running."""
    if _DASK:
        cluster, client = _DASK
        _DASK.clear()
        client.close()
        cluster.close()


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns a true value (returned), or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """End ``process`` (SIGTERM, then SIGKILL after ``grace`` seconds) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def worker_environment(extra_paths: Sequence[str | os.PathLike] = ()) -> dict[str, str]:
    """The current environment, with ``extra_paths`` first on ``PYTHONPATH`` (so that workers
    import the test module's simulators) and one thread per math library."""
    env = dict(os.environ)
    paths = [os.fspath(p) for p in extra_paths]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


class RedisServer:
    """A ``redis-server`` on the loopback interface, on a free port, in ``directory``.

    Arguments:
        directory: Working directory of the server (and its log file).
        startup_timeout: Seconds to wait for the server to answer ``PING``.
    """

    def __init__(self, directory: Path, startup_timeout: float = 20.0):
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not on PATH")
        self.host, self.port = _HOST, free_port()
        self.log = Path(directory) / "redis.log"
        command = [
            REDIS_SERVER,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", os.fspath(directory),
            "--logfile", os.fspath(self.log),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(self._answers, startup_timeout, f"redis-server on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def client(self):
        """A ``redis.StrictRedis`` connected to the server."""
        from redis import StrictRedis

        return StrictRedis(host=self.host, port=self.port, socket_timeout=5)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            message = self.process.stderr.read().decode(errors="replace")
            raise RuntimeError(
                f"redis-server exited with code {self.process.returncode}: {message}"
            )
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def stop(self) -> None:
        """Stop the server and reap it."""
        stop_process(self.process)


def start_redis_workers(
    server: RedisServer,
    num_workers: int,
    directory: Path,
    *,
    runtime: str = "10m",
    env: dict[str, str] | None = None,
) -> list[subprocess.Popen]:
    """Start ``num_workers`` ``abc-redis-worker`` processes (one process each) for ``server``.

    Their output goes to ``worker-<i>.log`` in ``directory``. The caller stops them with
    :func:`stop_process` (a fixture does, on failure too).
    """
    executable = Path(sys.executable).with_name("abc-redis-worker")
    if not executable.exists():
        raise RuntimeError(f"abc-redis-worker not found next to {sys.executable} (install pyabc)")
    workers = []
    try:
        for i in range(num_workers):
            log = open(Path(directory) / f"worker-{i}.log", "wb")  # noqa: SIM115
            command = [
                os.fspath(executable),
                "--host", server.host,
                "--port", str(server.port),
                "--runtime", runtime,
                "--processes", "1",
            ]  # fmt: skip
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
            log.close()  # the child holds its own descriptor
    except BaseException:
        for worker in workers:
            stop_process(worker)
        raise
    return workers


def max_generation(db_path: str | os.PathLike) -> int | None:
    """The last generation ``t`` stored in a pyabc SQLite database, ``None`` if none yet.

    Read-only and tolerant of a database being written by a run (a locked or not yet created
    database reads as ``None``).
    """
    path = Path(db_path)
    if not path.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)) as db:
            row = db.execute("SELECT MAX(t) FROM populations WHERE t >= 0").fetchone()
    except sqlite3.OperationalError:  # locked, or the tables do not exist yet
        return None
    return None if row is None or row[0] is None else int(row[0])
