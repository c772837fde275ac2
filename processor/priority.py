"""The worker's CPU priority: a backfill worker runs at idle priority, so the kernel gives the daily
workers beside it the CPU whenever they want it and the backfill all the rest.

Linux's ``SCHED_IDLE`` is set per thread and inherited by the threads a thread creates; the threads
that already run (thread pools started at import) are set one by one from ``/proc/self/task``, so call
this before the model's runtime starts its own. Where there is no ``SCHED_IDLE``: nice 19. Priorities
act among the processes of one cgroup (a host, a VM, one container); between containers or pods, CPU
weights (Kubernetes' CPU requests, Compose's ``cpu_shares``) decide instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TASKS = Path("/proc/self/task")


def lower_cpu_priority() -> str:
    """Put every thread of this process at idle priority; return what was applied."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE") and TASKS.is_dir():
        try:
            _every_thread_idle()
            return "SCHED_IDLE"
        except PermissionError:  # a sandbox that forbids it: nice still lowers the weight
            pass
    os.nice(19 - os.nice(0))
    return "nice 19"


def _every_thread_idle() -> None:
    """SCHED_IDLE on each thread, again until no new thread appeared meanwhile (one created by a thread
    not yet set would miss it)."""
    done: set[int] = set()
    while todo := {int(p.name) for p in TASKS.iterdir()} - done:
        for tid in todo:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        done |= todo


def is_idle(tid: int = 0) -> bool:
    """Whether a thread (0: this one) runs at idle priority."""
    if hasattr(os, "sched_getscheduler") and hasattr(os, "SCHED_IDLE"):
        return os.sched_getscheduler(tid) == os.SCHED_IDLE
    return os.getpriority(os.PRIO_PROCESS, tid) >= 19
