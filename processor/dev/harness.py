"""The one worker-process harness: isolated per-run settings, ``processor worker`` subprocesses configured
through ``PROCESSOR_*`` variables, waiting until they consume, and stopping them (signal, wait, kill).
The demo, the tests and the benchmarks all use it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..settings import Settings
from .stack import StackUrls, stop_processes

READY_MARK = "partitions assigned"  # the worker logs it when the group gave it partitions


def isolated_settings(urls: StackUrls, prefix: str = "run", **overrides: Any) -> Settings:
    """Settings with topics, consumer group and table of their own, so runs on one stack never meet."""
    tag = f"{prefix}-{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "broker_url": urls.broker_url,
        "postgres_dsn": urls.postgres_dsn,
        "redis_url": urls.redis_url,
        "input_topic": f"{tag}-images",
        "output_topic": f"{tag}-classifications",
        "dlq_topic": f"{tag}-dlq",
        "consumer_group": tag,
        "postgres_table": tag.replace("-", "_"),
        "allow_networks": "127.0.0.1/32",
    }
    return Settings(**{**fields, **overrides})


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment that makes a worker read exactly these settings."""
    env = dict(os.environ)
    for key, value in settings.model_dump().items():
        if value is not None:
            env[f"PROCESSOR_{key.upper()}"] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return env


class WorkerProcess:
    """A ``processor worker`` subprocess writing its log to ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor", "worker"],
                env=settings_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self, marks: int = 1) -> bool:
        """True once the worker has been given partitions ``marks`` times; raises if it exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        return self.log().count(READY_MARK) >= marks

    async def ready(self, timeout_s: float = 120.0, marks: int = 1) -> None:
        """Wait until the worker consumes (or raise with the end of its log)."""
        await wait_ready([self], timeout_s, marks)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig``, wait up to ``timeout_s``, then kill; return the exit code."""
        stop_processes([self.proc], timeout_s, sig)
        return self.proc.returncode


async def wait_ready(workers: Iterable[WorkerProcess], timeout_s: float = 120.0, marks: int = 1) -> None:
    """Wait until every worker consumes; raise with the log of one that exited or never got ready."""
    pending = list(workers)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [w for w in pending if not w.is_ready(marks)]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"worker not ready after {timeout_s} s:\n{pending[0].log()[-4000:]}")
        await asyncio.sleep(0.1)
