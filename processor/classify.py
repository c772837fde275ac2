"""Direct classification of files and URLs, outside the stream (``processor classify``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .decode import decode_image
from .errors import ProcessorError
from .fetch import Fetcher
from .model import Classifier
from .settings import Settings


async def classify_targets(settings: Settings, targets: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Fetch or read every target, decode, classify in one batch; errors are per target."""
    classifier = await asyncio.to_thread(
        Classifier, settings.model_dir, settings.banner_threshold, settings.inference_runtime
    )
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:
        loaded = await asyncio.gather(*(_load(fetcher, settings, classifier, t) for t in targets))
    finally:
        await fetcher.close()
    ok = [i for i, item in enumerate(loaded) if not isinstance(item, ProcessorError)]
    predictions = classifier.predict([loaded[i].pixels for i in ok]) if ok else []
    by_index = dict(zip(ok, predictions, strict=True))
    results: list[tuple[str, dict[str, Any]]] = []
    for i, target in enumerate(targets):
        item = loaded[i]
        if isinstance(item, ProcessorError):
            results.append((target, {"error": {"kind": item.kind, "detail": item.detail}}))
            continue
        p = by_index[i]
        results.append(
            (
                target,
                {
                    "has_banner": p.banner_score >= classifier.banner_threshold,
                    "banner_score": p.banner_score,
                    "position": p.position_at(classifier.info.position_floor),
                    "position_scores": p.position_scores,
                    "width": item.width,
                    "height": item.height,
                    "model": {"name": classifier.info.name, "version": classifier.info.version},
                },
            )
        )
    return results


async def _load(fetcher: Fetcher, settings: Settings, classifier: Classifier, target: str) -> Any:
    try:
        if "://" in target:
            data = (await fetcher.fetch(target)).data
        else:
            data = await asyncio.to_thread(Path(target).read_bytes)
        return await asyncio.to_thread(decode_image, data, classifier.input_size, settings.max_image_pixels)
    except ProcessorError as exc:
        return exc
    except OSError as exc:
        return ProcessorError(f"cannot read {target}: {exc}")
