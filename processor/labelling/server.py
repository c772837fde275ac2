"""The labelling application: state, routes and lifecycle, and the model labels it asks about."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from aiohttp import web

from .. import registry
from ..settings import Settings
from . import views_admin, views_api, views_auth, views_images, views_label
from .config import LabelConfig
from .images import ImageProxy
from .schema import create_pool, migrate
from .web import (
    CONFIG,
    EXPORT_LOCK,
    IMAGES,
    POOL,
    POSITIONS,
    SETTINGS,
    TABLE,
    TEMPLATES,
    THRESHOLD,
    auth,
    forwarded,
    security_headers,
    templates,
)

STATIC_DIR = Path(__file__).parent / "static"
MAX_FORM_BYTES = 256 * 1024


async def model_dir_in_use(pool: asyncpg.Pool, settings: Settings) -> Path:
    """The registry's active model directory, else the configured one."""
    try:
        current = await registry.active(pool)
    except asyncpg.UndefinedTableError:
        current = None
    return current.model_dir if current is not None else settings.model_dir


def model_labels(model_dir: Path, settings: Settings) -> tuple[tuple[str, ...], float]:
    """The position label set and the banner threshold of a model directory (its metadata.json)."""
    meta = registry.read_metadata(model_dir)
    threshold = settings.banner_threshold
    return tuple(meta["labels"]["position"]), float(
        meta.get("banner_threshold", 0.5) if threshold is None else threshold
    )


def create_app(settings: Settings, config: LabelConfig) -> web.Application:
    """The app; its Postgres pool and image fetcher start and stop with it."""
    app = web.Application(middlewares=[forwarded, auth], client_max_size=MAX_FORM_BYTES)
    app[CONFIG] = config
    app[TABLE] = settings.postgres_table
    app[SETTINGS] = settings
    app[EXPORT_LOCK] = asyncio.Lock()
    app[TEMPLATES] = templates()
    app.on_response_prepare.append(security_headers)
    app.add_routes(views_auth.routes)
    app.add_routes(views_label.routes)
    app.add_routes(views_admin.routes)
    app.add_routes(views_images.routes)
    app.add_routes(views_api.routes)
    app.router.add_static("/static", STATIC_DIR)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings.postgres_dsn, config.db_schema)
        images = ImageProxy(settings, config.image_cache_items, config.display_px, pool)
        try:
            await migrate(pool)
            positions, threshold = model_labels(await model_dir_in_use(pool, settings), settings)
            await images.start()
            app[POOL], app[IMAGES], app[POSITIONS], app[THRESHOLD] = pool, images, positions, threshold
            yield
        finally:
            await images.close()
            await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app
