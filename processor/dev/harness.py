"""The one worker-process harness: isolated per-run settings, ``processor worker`` subprocesses configured
through ``PROCESSOR_*`` variables, waiting until they consume, and stopping them (signal, wait, kill).
The demo, the tests and the benchmarks all use it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..settings import Settings
from .stack import StackUrls, free_port, stop_processes


def isolated_settings(urls: StackUrls, prefix: str = "run", **overrides: Any) -> Settings:
    """Settings with topics, consumer group and table of their own, so runs on one stack never meet."""
    tag = f"{prefix}-{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "broker_url": urls.broker_url,
        "postgres_dsn": urls.postgres_dsn,
        "redis_url": urls.redis_url,
        "input_topic": f"{tag}-images",
        "backfill_topic": f"{tag}-backfill",
        "output_topic": f"{tag}-classifications",
        "dlq_topic": f"{tag}-dlq",
        "removals_topic": f"{tag}-removals",
        "listing_updates_topic": f"{tag}-listing-updates",
        "listings_table": f"{tag.replace('-', '_')}_listings",
        "consumer_group": tag,
        "postgres_table": tag.replace("-", "_"),
        "allow_networks": "127.0.0.1/32",
        "follow_registry": False,  # the registry table is shared by every run on a stack
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
    """A ``processor worker`` subprocess writing its log to ``log_path``; its health endpoint listens on
    ``settings.metrics_port`` (a free port is chosen when it is 0)."""

    def __init__(
        self, settings: Settings, log_path: Path, prefix: Sequence[str] = (), probe_host: str = "127.0.0.1"
    ) -> None:
        """``prefix`` runs the worker through a command (``ip netns exec NAME``: the fault harness), and
        ``probe_host`` is where its health endpoint is reached from here."""
        if not settings.metrics_port:
            settings = settings.with_overrides(metrics_port=free_port())
        self.settings = settings
        self.log_path = log_path
        self.probe_host = probe_host
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "processor", "worker"],
                env=settings_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def probe(self, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
        """GET one of the worker's health routes: status and JSON body (0 and {} when it does not answer)."""
        url = f"http://{self.probe_host}:{self.settings.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def is_ready(self, assignments: int = 1) -> bool:
        """True once /readyz says ready after ``assignments`` partition assignments; raises if it exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        status, body = self.probe()
        return status == 200 and int(body.get("assignments", 0)) >= assignments

    async def ready(self, timeout_s: float = 120.0, assignments: int = 1) -> None:
        """Wait until the worker is ready (or raise with the end of its log)."""
        await wait_ready([self], timeout_s, assignments)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig``, wait up to ``timeout_s``, then kill; return the exit code."""
        stop_processes([self.proc], timeout_s, sig)
        return self.proc.returncode


async def wait_ready(workers: Iterable[WorkerProcess], timeout_s: float = 120.0, assignments: int = 1) -> None:
    """Wait until every worker's /readyz says ready; raise with the log of one that exited or never got ready."""
    pending = list(workers)
    deadline = time.monotonic() + timeout_s
    while pending:
        pending = [w for w in pending if not await asyncio.to_thread(w.is_ready, assignments)]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"worker not ready after {timeout_s} s:\n{pending[0].log()[-4000:]}")
        await asyncio.sleep(0.1)
