"""The worker's HTTP endpoint (on ``metrics_port``): Prometheus metrics, liveness and readiness.

- ``GET /metrics``: every ``processor_*`` metric.
- ``GET /healthz`` (liveness): the event loop answers (it serves this), and the worker either makes
  progress or has nothing to do: 503 when events have waited longer than ``liveness_stall_s`` with
  no acknowledgement in that time, unless the broker or Postgres is away (a restart would not bring
  them back, and a worker restarted in a loop only adds rebalances).
- ``GET /readyz`` (readiness): the model is loaded, Postgres answered the last check, the broker
  answered its last probe (``processor.brokerlink``), and the consumer group assigned this worker its
  partitions; with a model server (``inference_url``), the
  server answers (its circuit is closed). The JSON body says which check fails. While the model
  server is down, waiting events do not fail liveness: restarting the worker would not bring it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


@dataclass
class WorkerHealth:
    """What the probes report; the worker updates it as things happen."""

    liveness_stall_s: float
    model_loaded: bool = False
    postgres_ok: bool = False
    broker_ok: bool = False  # the broker answered the last probe (processor.brokerlink.BrokerWatch)
    stuck: set[Any] = field(default_factory=set)  # partitions whose oldest unacked event is older than stuck_after_s
    assignments: int = 0  # partition assignments received (rebalances count)
    partitions: int = 0
    oldest_unacked_s: float = 0.0
    last_progress: float = field(default_factory=time.monotonic)
    model_server: Callable[[], bool] | None = None  # whether the model server answers (remote inference only)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def live(self) -> tuple[bool, dict[str, Any]]:
        idle_s = time.monotonic() - self.last_progress
        stalled = self.oldest_unacked_s > self.liveness_stall_s and idle_s > self.liveness_stall_s
        stalled = stalled and self.broker_ok and self.postgres_ok  # waiting on an outage is not a stall
        stalled = stalled and (self.model_server is None or self.model_server())
        return not stalled, {"oldest_unacked_s": round(self.oldest_unacked_s, 1), "since_progress_s": round(idle_s, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        checks = {
            "model_loaded": self.model_loaded,
            "postgres": self.postgres_ok,
            "broker": self.broker_ok,
            "assigned": self.assignments > 0,
        }
        if self.model_server is not None:
            checks["model_server"] = self.model_server()
        return all(checks.values()), {**checks, "assignments": self.assignments, "partitions": self.partitions}


def health_app(health: WorkerHealth) -> web.Application:
    """The aiohttp application serving the three routes."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        ok, body = health.live()
        return web.json_response({"ok": ok, **body}, status=200 if ok else 503)

    async def readyz(_request: web.Request) -> web.Response:
        ok, body = health.ready()
        return web.json_response({"ok": ok, **body}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(health: WorkerHealth, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Start the endpoint; the caller cleans the returned runner up at shutdown."""
    runner = web.AppRunner(health_app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
