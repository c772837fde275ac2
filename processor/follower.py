"""The model follower: a running worker switches to the model promoted in the registry (``processor
model promote``) between events, without a restart; each event keeps the model it started with."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from . import metrics, registry
from .inference import RemoteClassifier
from .model import Classifier
from .pipeline import Pipeline
from .settings import Settings
from .store import PostgresStore

log = logging.getLogger(__name__)


class ModelFollower:
    """Loads the model promoted in the registry and switches the pipeline to it between events:
    no restart, no event lost or acked twice; each result names the model that made it."""

    def __init__(self, pipeline: Pipeline, store: PostgresStore, settings: Settings) -> None:
        self._pipeline = pipeline
        self._store = store
        self._settings = settings
        self._migrated = False
        self._refused: tuple[str, str, int] | None = None  # a promoted model that failed to load: not retried

    async def check(self) -> None:
        if isinstance(self._pipeline.classifier, RemoteClassifier):
            # The model server follows the registry (processor serve-model); results name what it answers with.
            await self._pipeline.classifier.refresh()
            return
        try:
            if not self._migrated:
                await registry.migrate(self._store.pool)
                self._migrated = True
            wanted = await registry.active(self._store.pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # next check tries again
            log.warning("model registry not read: %s: %s", type(exc).__name__, exc)
            return
        running = self._pipeline.classifier
        info = running.info
        if wanted is None or (wanted.name, wanted.version, wanted.generation) == self._refused:
            return
        if (wanted.name, wanted.version) == (info.name, info.version):
            if running.generation != wanted.generation:  # promoted again, or the model the worker started with
                running.generation = wanted.generation
                log.info("classifying with %s %s as promotion %d", info.name, info.version, wanted.generation)
            return
        log.info("model %s %s promoted: loading %s", wanted.name, wanted.version, wanted.model_dir)
        try:
            s = self._settings
            model = await asyncio.to_thread(Classifier.for_worker, wanted.model_dir, s)
            await asyncio.to_thread(model.warm_up, s.batch_size)
        except Exception as exc:  # a broken directory must not stop the worker: keep the running model
            self._refused = (wanted.name, wanted.version, wanted.generation)  # a new promotion retries it
            log.error(
                "promoted model %s %s does not load; keeping %s %s: %s",
                wanted.name,
                wanted.version,
                info.name,
                info.version,
                exc,
            )
            return
        model.generation = wanted.generation
        self._pipeline.use_model(model)
        metrics.MODEL_INFO.clear()
        metrics.MODEL_INFO.labels(model.info.name, model.info.version).set(1)
        log.info("now classifying with %s %s", model.info.name, model.info.version)
