"""PNG plots of a benchmark report."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, label in (
        ("by_batch_size", "inference batch size"),
        ("by_fetch_concurrency", "fetch concurrency"),
        ("by_workers", "worker processes"),
    ):
        runs = report.get(key) or {}
        if not runs:
            continue
        xs = sorted(runs, key=float)
        fig, left = plt.subplots(figsize=(6, 4))
        left.plot([str(x) for x in xs], [runs[x]["images_per_s"] for x in xs], "o-", label="images/s")
        left.set_xlabel(label)
        left.set_ylabel("images/s")
        right = left.twinx()
        right.plot([str(x) for x in xs], [runs[x]["latency_ms"]["p95"] for x in xs], "s--", color="tab:red")
        right.set_ylabel("p95 latency ms (backlog)", color="tab:red")
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, run in (("backlog", report["end_to_end"]), ("half load", report.get("latency_at_half_load"))):
        if run:
            cdf = run["latency_cdf_ms"]
            ax.plot(cdf, [i * 100 / (len(cdf) - 1) for i in range(len(cdf))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("event to stored result, ms")
    ax.set_ylabel("percent of events")
    ax.legend()
    fig.tight_layout()
    path = out / "latency_cdf.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
