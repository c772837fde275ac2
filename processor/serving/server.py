"""``processor serve-model``: the shipped (or promoted) model behind Triton, for workers to share.

The server follows the model registry as the workers' own follower does: when ``processor model
promote`` makes another directory active, its ONNX model becomes a new version folder of the served
model (Triton version = promotion generation + 1; version 1 is a model the registry never promoted)
and is loaded through Triton's repository API. The previous version stays loaded
(``version_policy: latest 2``), so events already under way finish on it: workers pin each event's
request to the version it started with (``processor.inference``), and each result names the version
that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
from pathlib import Path

import asyncpg

from .. import registry
from ..settings import Settings
from .repository import Batching, read_served, write_version
from .triton import Endpoints, TritonServer

log = logging.getLogger(__name__)
REGISTRY_TIMEOUT_S = 5.0


def batching_of(settings: Settings) -> Batching:
    return Batching(
        max_batch_size=settings.model_server_max_batch_size,
        preferred_batch_sizes=settings.model_server_preferred_batch_sizes,
        max_queue_delay_us=round(settings.model_server_max_queue_delay_ms * 1000),
        instances=settings.model_server_instances,
        kind="cpu",
        intra_op_threads=settings.model_server_threads,
    )


def endpoints_of(settings: Settings) -> Endpoints:
    return Endpoints(
        settings.model_server_host,
        settings.model_server_http_port,
        settings.model_server_grpc_port,
        settings.model_server_metrics_port,
    )


class ModelServer:
    """A Triton server over a repository this object keeps in step with the registry."""

    def __init__(self, settings: Settings, endpoints: Endpoints | None = None, workspace: Path | None = None) -> None:
        self.settings = settings
        self.model = settings.inference_model
        self.batching = batching_of(settings)
        self._own_workspace = workspace is None  # a temporary one, removed at the end of run()
        self.workspace = workspace or Path(tempfile.mkdtemp(prefix="processor-model-server-"))
        self.repository = settings.model_server_repository or self.workspace / "repository"
        self.triton = TritonServer(self.repository, self.workspace, endpoints or endpoints_of(settings), (self.model,))
        self._pool: asyncpg.Pool | None = None
        self._stop = asyncio.Event()

    def served_generations(self) -> dict[int, int]:
        """Triton version → registry generation of the versions in the repository."""
        return {number: s.generation for number, s in read_served(self.repository / self.model).items()}

    def add(self, model_dir: Path, generation: int) -> int:
        """Write ``model_dir`` as the version of this generation; returns the Triton version."""
        number = generation + 1
        write_version(self.repository, self.model, model_dir, number, generation, self.batching)
        return number

    async def start(self) -> None:
        """Write the first version (the registry's active model, else ``model_dir``), start Triton, wait for it."""
        wanted = await self._active()
        if wanted is not None:
            try:
                self.add(wanted.model_dir, wanted.generation)
            except (OSError, ValueError) as exc:  # gone or unfit: serve model_dir until the next promotion
                log.error("active model %s not served: %s: %s", wanted.model_dir, type(exc).__name__, exc)
        if not self.served_generations():
            self.add(self.settings.model_dir, 0)
        await asyncio.to_thread(self.triton.start)
        await asyncio.to_thread(self.triton.wait_ready, 120.0)
        e = self.triton.endpoints
        log.info(
            "model server ready: %s (gRPC %s:%d, metrics %s), model %s, versions %s",
            e.http_url,
            e.host,
            e.grpc_port,
            e.metrics_url,
            self.model,
            sorted(self.served_generations()),
        )

    async def follow(self) -> bool:
        """Serve the registry's active model if it is not served yet; True when a version was added."""
        wanted = await self._active()
        if wanted is None or wanted.generation in self.served_generations().values():
            return False
        log.info("promotion %d (%s %s): loading %s", wanted.generation, wanted.name, wanted.version, wanted.model_dir)
        try:
            number = await asyncio.to_thread(self.add, wanted.model_dir, wanted.generation)
            await asyncio.to_thread(self.triton.load, self.model)
        except Exception as exc:  # a broken directory must not stop the server: keep serving what it serves
            log.error("promoted model %s %s not served: %s: %s", wanted.name, wanted.version, type(exc).__name__, exc)
            return False
        log.info("serving %s %s as version %d", wanted.name, wanted.version, number)
        return True

    async def _active(self) -> registry.ModelVersion | None:
        if not self.settings.follow_registry:
            return None
        try:
            async with asyncio.timeout(REGISTRY_TIMEOUT_S):
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self.settings.postgres_dsn, min_size=1, max_size=1)
                    await registry.migrate(self._pool)
                return await registry.active(self._pool)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # next check retries
            log.warning("model registry not read: %s: %s", type(exc).__name__, exc)
            return None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until Triton dies (1: let the supervisor restart the server)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.settings.monitor_interval_s)
                if not self.triton.alive():
                    log.error("tritonserver exited; log: %s", self.triton.tail())
                    return 1
                if not self._stop.is_set():
                    await self.follow()
            return 0
        finally:
            await asyncio.to_thread(self.triton.stop)
            if self._pool is not None:
                await self._pool.close()
            if self._own_workspace:
                shutil.rmtree(self.workspace, ignore_errors=True)
