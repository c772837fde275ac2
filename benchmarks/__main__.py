"""``python -m benchmarks``: the pipeline end to end, a naive baseline and each stage alone, in one run.

Prints a table and the ratios (speed-up over naive; efficiency = end-to-end / combined stage limit),
writes every figure as JSON (``--json``) and PNG plots (``--plots``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack, StackUrls
from processor.model import Classifier, choose_runtime
from processor.settings import DEFAULT_MODEL_DIR
from processor.topics import ensure_topics, produce_lines

from . import features
from .cdn import event_urls, make_photos
from .e2e import RunConfig, run_pipeline, run_settings
from .naive import naive_rate
from .stages import decode_rate, fetch_rate, inference_rate

PROFILES = {  # events, distinct photos, naive events, sweep events, paced seconds, stage seconds; features:
    # listing actor events and runs of each side, seconds of paced daily events, URLs per revalidation pass
    "smoke": dict(
        events=120, photos=20, naive=10, sweep=0, paced_s=0, stage_s=0.3, workers=(1,),
        listing=60, listing_reps=1, daily_s=2, revalidate=30,
    ),
    "quick": dict(
        events=2000, photos=60, naive=40, sweep=1000, paced_s=10, stage_s=2.0, workers=(1, 2),
        listing=1000, listing_reps=2, daily_s=10, revalidate=400,
    ),
    "full": dict(
        events=5000, photos=200, naive=100, sweep=1500, paced_s=30, stage_s=5.0, workers=(1, 2, 4),
        listing=1500, listing_reps=3, daily_s=30, revalidate=1000,
    ),
}  # fmt: skip


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@click.command()
@click.option("--quick", "profile", flag_value="quick", help="A run of under five minutes.")
@click.option("--smoke", "profile", flag_value="smoke", help="Seconds; for the test suite.")
@click.option("--full", "profile", flag_value="full", default=True, help="The whole run (default).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write every figure here.")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), help="Write PNG plots here.")
@click.option("--latency-ms", default=20.0, show_default=True, help="Simulated CDN latency per image.")
@click.option("--jitter-ms", default=10.0, show_default=True, help="Uniform jitter around it.")
@click.option("--banner-share", default=0.35, show_default=True)
@click.option("--repeat-share", default=0.1, show_default=True, help="Events that repeat an earlier URL.")
@click.option("--batch-size", default=32, show_default=True, help="Inference batch of the main run.")
@click.option("--fetch-concurrency", default=64, show_default=True)
def main(
    profile: str,
    json_path: Path | None,
    plots_dir: Path | None,
    latency_ms: float,
    jitter_ms: float,
    banner_share: float,
    repeat_share: float,
    batch_size: int,
    fetch_concurrency: int,
) -> None:
    """Benchmark the pipeline against a naive baseline and the limits of this machine."""
    p = PROFILES[profile]
    say(f"profile {profile}: starting the embedded stack and generating {p['photos']} photos")
    photos = make_photos(int(p["photos"]), banner_share)
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        assert stack.urls is not None
        report = asyncio.run(
            _run(
                stack.urls,
                photos,
                p,
                Path(workdir),
                latency_ms / 1000,
                jitter_ms / 1000,
                repeat_share,
                batch_size,
                fetch_concurrency,
            )
        )
    report["machine"] = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],  # the host is shared: how busy it was
    }
    report["profile"] = profile
    if json_path:  # first: a long run's figures survive a failing table
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        say(f"wrote {json_path}")
    _print_table(report)
    if plots_dir:
        from .plots import write_plots

        for path in write_plots(report, plots_dir):
            say(f"wrote {path}")


async def _run(
    urls: StackUrls,
    photos: dict[str, bytes],
    p: dict[str, Any],
    workdir: Path,
    latency_s: float,
    jitter_s: float,
    repeat_share: float,
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    names = sorted(photos)
    async with ImageServer(images=photos, latency_s=latency_s, jitter_s=jitter_s) as server:
        classifier = Classifier(DEFAULT_MODEL_DIR)
        stages = await _stages(classifier, list(photos.values()), server, names, p, batch_size, concurrency)
        naive = await _naive(urls, classifier, server, names, int(p["naive"]))
        del classifier
        events = int(p["events"])
        image_urls = event_urls(server, names, max(events, int(p["sweep"])) * 2, repeat_share)
        say(f"end to end: {events} events, batch {batch_size}, fetch concurrency {concurrency}")
        main_run = await run_pipeline(urls, image_urls, RunConfig(events, 1, batch_size, concurrency), workdir)
        say(f"  {main_run['images_per_s']} images/s")
        sweeps = await _sweeps(urls, image_urls, p, workdir, batch_size, concurrency)
        paced, fixed_paced, one_thread_paced, per_send_paced = await _paced(
            urls, server, names, p, workdir, main_run["images_per_s"], batch_size, concurrency
        )
        batching = await _batching(urls, image_urls, p, workdir, batch_size, concurrency, paced, fixed_paced)
        legacy = await _legacy(urls, image_urls, p, workdir, batch_size, concurrency)
        config = RunConfig(int(p["listing"]), 1, batch_size, concurrency)
        feature_runs = await _features(urls, server, names, image_urls, p, workdir, main_run["images_per_s"], config)
    limit = stages["combined_limit_images_per_s"]
    return {
        "end_to_end": main_run,
        "naive": naive,
        "stages": stages,
        "speedup_vs_naive": round(main_run["images_per_s"] / naive["images_per_s"], 2),
        "efficiency": round(main_run["images_per_s"] / limit, 3),
        "efficiency_vs_decode_inference": round(
            main_run["images_per_s"] / stages["decode_inference_limit_images_per_s"], 3
        ),
        "latency_at_half_load": paced and _with_sides(paced, one_thread_paced, per_send_paced),
        "batching_policy": batching,
        "legacy_settings": legacy,
        "worker_cpu_ms_per_image": round(1000 * main_run["cpu_cores_used_by_workers"] / main_run["images_per_s"], 2),
        **sweeps,
        **feature_runs,
        "cdn": {
            "latency_ms": latency_s * 1000,
            "jitter_ms": jitter_s * 1000,
            "repeat_share": repeat_share,
            "distinct_photos": len(photos),
        },
    }


async def _stages(
    classifier: Classifier,
    photos: list[bytes],
    server: ImageServer,
    names: list[str],
    p: dict[str, Any],
    batch_size: int,
    concurrency: int,
) -> dict[str, Any]:
    threads = os.cpu_count() or 2
    say(f"stage alone: decode ({threads} threads), inference, fetch")
    decode = decode_rate(photos, classifier.input_size, threads, p["stage_s"])
    inference = {bs: round(inference_rate(classifier, bs, p["stage_s"]), 1) for bs in (1, 8, 32, 64)}
    chosen = inference_rate(classifier, batch_size, p["stage_s"])
    by_runtime = {classifier.runtime: round(chosen, 1)}  # the worker's runtime, and the others side by side
    for runtime in ("onnx", "openvino"):
        if runtime not in by_runtime and choose_runtime(DEFAULT_MODEL_DIR, runtime) == runtime:
            with contextlib.suppress(ImportError):
                by_runtime[runtime] = round(
                    inference_rate(Classifier(DEFAULT_MODEL_DIR, runtime=runtime), batch_size, p["stage_s"]), 1
                )
    fetch = await fetch_rate(event_urls(server, names, 400 if p["stage_s"] > 1 else 60, 0.0, seed=9), concurrency)
    # On one machine the stages share the CPUs, so their per-image costs add. Fetching from the
    # loopback CDN is CPU-bound too (client and server), so it counts as a stage; the second figure
    # leaves it out, as for a remote CDN whose latency the fetch concurrency hides.
    combined = 1 / (1 / decode + 1 / chosen + 1 / fetch["images_per_s"])
    return {
        "decode_images_per_s": round(decode, 1),
        "decode_threads": threads,
        "inference_images_per_s": round(chosen, 1),
        "inference_by_batch_size": inference,
        "inference_runtime": classifier.runtime,
        "inference_by_runtime": by_runtime,
        "fetch": {k: round(v, 3) for k, v in fetch.items()},
        "combined_limit_images_per_s": round(combined, 1),
        "combined_limit_rule": "1 / (1/decode + 1/inference + 1/fetch)",
        "decode_inference_limit_images_per_s": round(1 / (1 / decode + 1 / chosen), 1),
    }


async def _naive(
    urls: StackUrls, classifier: Classifier, server: ImageServer, names: list[str], events: int
) -> dict[str, Any]:
    say(f"naive baseline: {events} events one at a time")
    settings = run_settings(urls, RunConfig(events))
    await ensure_topics(settings.broker_url, [settings.input_topic, settings.output_topic], 1)
    lines = [
        json.dumps({"image_id": f"n{i}", "listing_id": "n", "url": u}).encode()
        for i, u in enumerate(event_urls(server, names, events, 0.0, seed=11))
    ]
    await produce_lines(settings.broker_url, settings.input_topic, lines)
    rate = await naive_rate(settings, classifier, events)
    say(f"  {rate:.1f} images/s")
    return {"events": events, "images_per_s": round(rate, 2)}


async def _sweeps(
    urls: StackUrls, image_urls: list[str], p: dict[str, Any], workdir: Path, batch_size: int, concurrency: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"by_batch_size": {}, "by_fetch_concurrency": {}, "by_workers": {}}
    n = int(p["sweep"])
    if not n:
        return out
    for bs in (8, 32, 64):
        say(f"sweep: batch size {bs}")
        out["by_batch_size"][bs] = _brief(
            await run_pipeline(urls, image_urls, RunConfig(n, 1, bs, concurrency), workdir)
        )
    for c in (8, 32, 128):
        say(f"sweep: fetch concurrency {c}")
        out["by_fetch_concurrency"][c] = _brief(
            await run_pipeline(urls, image_urls, RunConfig(n, 1, batch_size, c), workdir)
        )
    for w in p["workers"]:
        say(f"scaling: {w} worker(s)")
        out["by_workers"][w] = _brief(
            await run_pipeline(urls, image_urls, RunConfig(n, w, batch_size, concurrency), workdir)
        )
    return out


async def _paced(
    urls: StackUrls,
    server: ImageServer,
    names: list[str],
    p: dict[str, Any],
    workdir: Path,
    max_rate: float,
    batch_size: int,
    concurrency: int,
) -> tuple[dict[str, Any] | None, ...]:
    """Latency at half the measured maximum with the default settings, then (side by side) with the fixed
    batch delay instead of the latency budget, with the defaults before this session's change, and with those
    measured as before it (a new producer for each send of the paced stream)."""
    if not p["paced_s"]:
        return None, None, None, None
    rate = max(1.0, max_rate / 2)
    events = int(rate * p["paced_s"])
    say(f"latency at half load: {rate:.0f} events/s for {p['paced_s']} s, no CDN latency")
    saved = server.latency_s, server.jitter_s
    server.latency_s = server.jitter_s = 0.0  # the issue's figure excludes the simulated CDN latency
    out: list[dict[str, Any]] = []
    try:
        urls_ = event_urls(server, names, events, 0.0, seed=13)
        sides = (
            ("latency budget", {}, False),
            ("fixed delay", FIXED_DELAY, False),
            ("one inference thread", ONE_THREAD, False),
            ("a producer per send", {}, True),
        )
        for name, overrides, per_send in sides:
            config = RunConfig(events, 1, batch_size, concurrency, rate_per_s=rate, overrides=overrides)
            config.producer_per_send = per_send
            run = await run_pipeline(urls, urls_, config, workdir)
            lat = run["latency_ms"]
            say(f"  {name}: p50/p95 {lat['p50']}/{lat['p95']} ms")
            out.append(
                {
                    "rate_per_s": round(rate, 1),
                    **_brief(run),
                    "stage_ms_mean": run["stage_ms_mean"],
                    "stage_ms_p95": run["stage_ms_p95"],
                    "latency_cdf_ms": run["latency_cdf_ms"],
                    "worker_rss_mb": run["worker_rss_mb"],
                }
            )
    finally:
        server.latency_s, server.jitter_s = saved
    return out[0], out[1], out[2], out[3]


def _with_sides(paced: dict[str, Any], *others: dict[str, Any] | None) -> dict[str, Any]:
    """The half-load run, with the same stream beside it on one inference thread, and measured as before this
    round (a producer per send: each event's stamp included starting it)."""
    keys = ("latency_ms", "stage_ms_p95", "batches_closed", "batch_size_histogram", "cpu_cores_used_by_workers")
    one_thread, per_send = others
    if one_thread is None or per_send is None:
        return paced
    return paced | {
        "one_inference_thread": {"overrides": ONE_THREAD, **{k: one_thread[k] for k in keys}},
        "producer_per_send": {k: per_send[k] for k in keys},
        "p95_ratio_default_one_thread": round(paced["latency_ms"]["p95"] / one_thread["latency_ms"]["p95"], 3),
        "p95_ratio_default_producer_per_send": round(paced["latency_ms"]["p95"] / per_send["latency_ms"]["p95"], 3),
    }


FIXED_DELAY = {"batch_latency_budget_ms": 0}  # the batcher before the latency budget: size or delay only
# Tried in issue 23's third round and measured beside the defaults at half load and in a backlog.
ONE_THREAD: dict[str, Any] = {"inference_threads": 1}
# The worker as it was before issue 23, as far as settings reach: ONNX Runtime with spinning threads, asyncio's
# loop, the fixed batch delay (not reachable by settings: ONNX Runtime's memory patterns, backfill priority).
LEGACY = FIXED_DELAY | {"inference_runtime": "onnx", "inference_spin": True, "event_loop": "asyncio"}


async def _legacy(
    urls: StackUrls, image_urls: list[str], p: dict[str, Any], workdir: Path, batch_size: int, concurrency: int
) -> dict[str, Any]:
    """A backlog with today's defaults, on one inference thread and with the legacy settings, side by side."""
    n = int(p["sweep"])
    if not n:
        return {}
    runs: dict[str, dict[str, Any]] = {}
    for name, overrides in (("default", {}), ("one_inference_thread", ONE_THREAD), ("legacy", LEGACY)):
        say(f"settings before and after issue 23, backlog of {n}: {name}")
        run = await run_pipeline(
            urls, image_urls, RunConfig(n, 1, batch_size, concurrency, overrides=overrides), workdir
        )
        runs[name] = _brief(run) | {
            "worker_cpu_ms_per_image": round(1000 * run["cpu_cores_used_by_workers"] / run["images_per_s"], 2),
            "worker_rss_mb": run["worker_rss_mb"],
        }
    return {
        "legacy_overrides": LEGACY,
        **runs,
        "images_per_s_ratio_default_legacy": round(runs["default"]["images_per_s"] / runs["legacy"]["images_per_s"], 3),
        "one_inference_thread_overrides": ONE_THREAD,
        "images_per_s_ratio_default_one_thread": round(
            runs["default"]["images_per_s"] / runs["one_inference_thread"]["images_per_s"], 3
        ),
    }


async def _batching(
    urls: StackUrls,
    image_urls: list[str],
    p: dict[str, Any],
    workdir: Path,
    batch_size: int,
    concurrency: int,
    paced: dict[str, Any] | None,
    fixed_paced: dict[str, Any] | None,
) -> dict[str, Any]:
    """The latency budget against the fixed delay, side by side: p95 at half load (the paced runs) and
    images/s of a backlog (two runs, budget then fixed delay)."""
    out: dict[str, Any] = {}
    if paced and fixed_paced:
        out["half_load"] = {
            "latency_budget": {k: paced[k] for k in ("latency_ms", "batches_closed", "batch_size_histogram")},
            "fixed_delay": {k: fixed_paced[k] for k in ("latency_ms", "batches_closed", "batch_size_histogram")},
            "p95_ratio_budget_fixed": round(paced["latency_ms"]["p95"] / fixed_paced["latency_ms"]["p95"], 3),
        }
    n = int(p["sweep"])
    if n:
        runs: dict[str, dict[str, Any]] = {}
        for name, overrides in (("latency_budget", {}), ("fixed_delay", FIXED_DELAY)):
            say(f"batching policy, backlog of {n}: {name}")
            config = RunConfig(n, 1, batch_size, concurrency, overrides=overrides)
            runs[name] = _brief(await run_pipeline(urls, image_urls, config, workdir))
        ratio = runs["latency_budget"]["images_per_s"] / runs["fixed_delay"]["images_per_s"]
        out["backlog"] = runs | {"images_per_s_ratio_budget_fixed": round(ratio, 3)}
    return out


async def _features(
    urls: StackUrls,
    server: ImageServer,
    names: list[str],
    image_urls: list[str],
    p: dict[str, Any],
    workdir: Path,
    max_rate: float,
    config: RunConfig,
) -> dict[str, Any]:
    say(f"listing actor on and off: {config.events} events, {p['listing_reps']} run(s) each")
    listing = await features.listing_actor(urls, image_urls, config, workdir, int(p["listing_reps"]))
    say(f"  {listing['images_per_s_on']} vs {listing['images_per_s_off']} images/s: cost {listing['cost_percent']} %")
    # A quarter of the measured maximum leaves the backfill room to run; the backlog is twice what the whole
    # machine could do in the window, so it never runs dry.
    rate, seconds = max(2.0, max_rate / 4), float(p["daily_s"])
    backlog = max(50, int(2 * max_rate * seconds))
    say(f"backfill: daily events at {rate:.0f}/s for {seconds:.0f} s, without and with {backlog} backfill events")
    bf = await features.backfill_shapes(urls, server, names, config, workdir, (rate, max_rate), seconds, backlog)
    for shape, run in bf["shapes"].items():
        say(f"  {shape}: {run['backfill_share_of_spare']} of the spare, daily p95 x{run['p95_ratio_with_without']}")
    say(f"revalidation: two passes over {p['revalidate']} URLs, CDN with and without ETags")
    reval = await features.revalidation(urls, server, names, replace(config, events=int(p["revalidate"])), workdir)
    say(f"  second pass: {reval['bytes_saved_percent']} % fewer bytes, {reval['second_pass_speedup']}x images/s")
    return {"listing_actor": listing, "backfill": bf, "revalidation": reval}


def _cpu_model() -> str:
    """The CPU's model name (hosts of one kind differ in it from day to day), where Linux says it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("images_per_s", "latency_ms", "batch_size_histogram", "batches_closed", "cpu_cores_used_by_workers")
    return {k: run[k] for k in keys}


def _print_table(r: dict[str, Any]) -> None:
    e2e, st = r["end_to_end"], r["stages"]
    rows = [
        ("end-to-end images/s", e2e["images_per_s"]),
        ("naive baseline images/s", r["naive"]["images_per_s"]),
        ("speed-up over naive", f"{r['speedup_vs_naive']}x"),
        ("decode alone images/s", st["decode_images_per_s"]),
        ("inference alone images/s", st["inference_images_per_s"]),
        ("fetch alone images/s", st["fetch"]["images_per_s"]),
        ("combined stage limit images/s", st["combined_limit_images_per_s"]),
        ("efficiency (end-to-end / limit)", r["efficiency"]),
        ("efficiency vs decode+inference only", r["efficiency_vs_decode_inference"]),
        ("latency p50/p95/p99 ms (backlog)", "/".join(str(v) for v in e2e["latency_ms"].values())),
        ("stage ms (mean)", e2e["stage_ms_mean"]),
        ("batches closed", e2e["batches_closed"]),
        ("cache hit rate", e2e["cache_hit_rate"]),
        ("worker CPU cores used", e2e["cpu_cores_used_by_workers"]),
    ]
    if r.get("latency_at_half_load"):
        h = r["latency_at_half_load"]
        rows.append(
            (f"latency at {h['rate_per_s']}/s p50/p95/p99 ms", "/".join(str(v) for v in h["latency_ms"].values()))
        )
    bp = r.get("batching_policy", {})
    if "half_load" in bp:
        rows.append(("half-load p95 budget / fixed delay", bp["half_load"]["p95_ratio_budget_fixed"]))
    if r.get("latency_at_half_load"):
        h = r["latency_at_half_load"]
        sides = (
            ("one_inference_thread", "p95_ratio_default_one_thread"),
            ("producer_per_send", "p95_ratio_default_producer_per_send"),
        )
        for key, ratio in sides:
            if key in h:
                other = "/".join(str(v) for v in h[key]["latency_ms"].values())
                rows.append((f"half-load p50/p95/p99 ms, {key}", f"{other} (p95 default / it: {h[ratio]})"))
    if "backlog" in bp:
        rows.append(("backlog images/s budget / fixed delay", bp["backlog"]["images_per_s_ratio_budget_fixed"]))
    if r.get("legacy_settings"):
        rows.append(("images/s default / legacy settings", r["legacy_settings"]["images_per_s_ratio_default_legacy"]))
        rows.append(
            ("images/s default / one inference thread", r["legacy_settings"]["images_per_s_ratio_default_one_thread"])
        )
    rows.append(("inference alone by runtime images/s", st["inference_by_runtime"]))
    for workers, run in r.get("by_workers", {}).items():
        rows.append((f"{workers} worker(s) images/s", run["images_per_s"]))
    rows.extend(_feature_rows(r))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def _feature_rows(r: dict[str, Any]) -> list[tuple[str, Any]]:
    la, bf, rv = r["listing_actor"], r["backfill"], r["revalidation"]
    without, with_ = (bf[k]["daily_latency_ms"] for k in ("without_backlog", "with_backlog"))
    etags, plain = rv["etags"]["second_pass"], rv["no_etags"]["second_pass"]
    return [
        ("listing actor on / off images/s", f"{la['images_per_s_on']} / {la['images_per_s_off']}"),
        ("listing actor cost", f"{la['cost_percent']} % (ratio {la['ratio_on_off']})"),
        (
            "listing actor worker CPU ms/image on / off",
            f"{la['worker_cpu_ms_per_image_on']} / {la['worker_cpu_ms_per_image_off']}",
        ),
        (
            f"daily p50/p95 ms at {bf['daily_rate_per_s']}/s without / with backlog",
            f"{without['p50']}/{without['p95']} / {with_['p50']}/{with_['p95']} (p95 x{bf['p95_ratio_with_without']})",
        ),
        ("backfill events done meanwhile", f"{bf['with_backlog']['backfill_done_meanwhile']} of {bf['backlog']}"),
        *(
            (
                f"backfill {shape}: share of spare, daily p95 ratio",
                f"{run['backfill_share_of_spare']}, x{run['p95_ratio_with_without']}",
            )
            for shape, run in bf["shapes"].items()
        ),
        (
            "2nd pass KB / images/s: ETags / none",
            f"{etags['bytes_downloaded'] // 1024} / {plain['bytes_downloaded'] // 1024} KB, "
            f"{etags['images_per_s']} / {plain['images_per_s']}",
        ),
        ("revalidation saving", f"{rv['bytes_saved_percent']} % bytes, {rv['second_pass_speedup']}x images/s"),
    ]


if __name__ == "__main__":
    main()
