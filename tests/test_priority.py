"""The worker's CPU priority: roles and what they imply, and idle priority on every thread of a process
(the threads that ran before and those started after), checked in a subprocess of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from processor.settings import Settings

CHILD = textwrap.dedent(
    """
    import os, threading
    from processor.priority import is_idle, lower_cpu_priority

    stop = threading.Event()
    before = threading.Thread(target=stop.wait)
    before.start()
    applied = lower_cpu_priority()
    after = threading.Thread(target=stop.wait)
    after.start()
    idle = [is_idle(int(tid)) for tid in os.listdir("/proc/self/task")]
    stop.set()
    print(applied, len(idle), all(idle))
    """
)


def test_lower_cpu_priority_sets_every_thread_idle() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    applied, threads, all_idle = done.stdout.split()
    assert applied == ("SCHED_IDLE" if sys.platform == "linux" else "nice 19")
    assert int(threads) >= 3 and all_idle == "True"


def test_this_process_is_left_alone() -> None:
    from processor.priority import is_idle

    assert not is_idle()


@pytest.mark.parametrize(
    ("role", "priority", "topic", "group", "idle"),
    [
        ("all", "auto", "images", "g", False),
        ("daily", "auto", "images", "g", False),
        ("backfill", "auto", "images-backfill", "g-backfill", True),
        ("backfill", "normal", "images-backfill", "g-backfill", False),
        ("all", "idle", "images", "g", True),
    ],
)
def test_roles_choose_topic_group_and_priority(role: str, priority: str, topic: str, group: str, idle: bool) -> None:
    settings = Settings(worker_role=role, cpu_priority=priority, consumer_group="g")
    assert (settings.consumed_topic, settings.group_id, settings.idle_cpu) == (topic, group, idle)
