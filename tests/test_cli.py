"""The commands as separate processes: stack, two workers, produce; and the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from processor.dev.harness import WorkerProcess
from processor.dev.imageserver import ImageServer
from processor.settings import Settings

from .conftest import event
from .helpers import SHIPPED_MODEL_NAME, fetch_rows, wait_for_rows

PROCESSOR = [sys.executable, "-m", "processor"]


def read_exports(proc: subprocess.Popen[str], timeout_s: float = 60) -> dict[str, str]:
    env: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while len(env) < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"stack exited: {proc.wait()}")
        if line.startswith("export "):
            key, value = line[len("export ") :].strip().split("=", 1)
            env[key] = value.strip("'")
    return env


async def test_stack_workers_and_produce_as_separate_processes(
    image_server: ImageServer, jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    stack = subprocess.Popen([*PROCESSOR, "stack", "--env"], stdout=subprocess.PIPE, text=True)
    workers: list[WorkerProcess] = []
    try:
        urls = read_exports(stack)
        settings = Settings(
            broker_url=urls["PROCESSOR_BROKER_URL"],
            postgres_dsn=urls["PROCESSOR_POSTGRES_DSN"],
            redis_url=urls["PROCESSOR_REDIS_URL"],
            allow_networks="127.0.0.1/32",
            topic_partitions=4,
            shutdown_grace_s=5,
        )
        workers = [WorkerProcess(settings, tmp_path / f"w{i}.log") for i in range(2)]
        events = [
            event(f"cli-{i}", image_server.url(name), listing=f"l-{i % 5}", index=i)
            for i, name in enumerate(sorted(jpegs))
        ]
        source = tmp_path / "events.jsonl"
        source.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\nnot json at all\n")
        produced = subprocess.run(
            [*PROCESSOR, "produce", str(source)], env={**os.environ, **urls}, capture_output=True, text=True, timeout=60
        )
        assert produced.returncode == 0, produced.stderr
        assert f"sent {len(events) + 1} events" in produced.stderr
        for worker in workers:
            await worker.ready()
        await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=90)
        assert len(await fetch_rows(settings)) == len(events)
        assert all(worker.stop() == 0 for worker in workers)
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL, 5)
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(30) == 0
        assert stack.stdout is not None
        stack.stdout.close()


def test_demo_accounts_for_every_event() -> None:
    done = subprocess.run(
        [*PROCESSOR, "demo", "--images", "60", "--listings", "6", "--json", "--generated"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["events"] == 60 and summary["accounted"] is True
    assert summary["classified"] + summary["dead_letters"] == 60
    assert summary["dead_letter_kinds"] == {"fetch_failed": 1}
    assert summary["output_topic_records"] == summary["classified"]
    assert summary["model"]["name"] == SHIPPED_MODEL_NAME
    states = summary["listing_states"]  # heroes and coverage come from the listing actor's table
    assert len(states) == 6 and sum(s["counts"]["images"] for s in states.values()) == summary["classified"]
    assert summary["listing_updates_topic_records"] >= 6
    for state in states.values():
        hero = state["hero"]["image_id"]
        assert (hero is None) == (state["counts"]["banner_free"] == 0) and (hero is None or hero in state["feed"])
