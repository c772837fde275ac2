"""Prometheus metrics, served on ``metrics_port`` when it is set."""

from __future__ import annotations

import contextlib

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

EVENTS = Counter("processor_events_total", "Events finished, by outcome.", ["outcome"])
DLQ = Counter("processor_dead_letters_total", "Dead-letter records, by kind.", ["kind"])
CACHE = Counter("processor_cache_lookups_total", "Cache lookups, by result.", ["result"])
CACHE_ERRORS = Counter("processor_cache_errors_total", "Redis calls that failed (cache skipped).")
FETCH_RESPONSES = Counter("processor_fetch_responses_total", "HTTP responses, by status.", ["status"])
FETCH_BYTES = Counter("processor_fetch_bytes_total", "Image bytes downloaded.")
BATCH_SIZE = Histogram("processor_batch_size", "Inference batch sizes.", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_CLOSED = Counter("processor_batches_total", "Inference batches, by why they closed.", ["reason"])
STORAGE_REJECTED = Counter(
    "processor_storage_rejected_total", "Items Postgres or the broker refused for good (dead-lettered).", ["where"]
)
STORE_RETRIES = Counter("processor_store_retries_total", "Sink flushes retried after a failure.")
IN_FLIGHT = Gauge("processor_in_flight", "Events being processed.")
CONSUMER_LAG = Gauge(
    "processor_consumer_lag", "Messages behind the log end, from the oldest unacknowledged.", ["topic", "partition"]
)
OLDEST_UNACKED = Gauge(
    "processor_oldest_unacked_age_seconds", "Age of the oldest unacknowledged event.", ["topic", "partition"]
)
STUCK_PARTITIONS = Gauge(
    "processor_stuck_partitions", "Partitions whose oldest unacked event is older than stuck_after_s."
)
WORK_FAILURES = Counter("processor_work_failures_total", "Attempts to process an event that raised (then retried).")
UNPUBLISHED = Counter(
    "processor_unpublished_outcomes_total",
    "Results and removals stored nowhere and published on no topic: superseded (a newer outcome of the same"
    " image in the same flush) or stale (older than the stored row). The newer outcome is the one published.",
    ["kind", "reason"],
)
LISTING_SKIPPED = Counter("processor_listing_skipped_total", "Result records without a listing id (ignored).")
MODEL_INFO = Gauge("processor_model_info", "The model in use (value 1).", ["name", "version"])
LAST_PROGRESS = Gauge("processor_last_progress_timestamp_seconds", "Unix time of the last acknowledged event.")
LATENCY = Histogram(
    "processor_event_latency_seconds",
    "Event time to stored result.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


def observe_inference_batch(size: int, reason: str) -> None:
    """Record one inference batch: its size and why it closed (full | timeout | early)."""
    BATCH_SIZE.observe(size)
    BATCH_CLOSED.labels(reason=reason).inc()


# Remote inference (inference_url set): the model server's state as this worker sees it. Registered by
# the remote client only (register_model_server), so that an in-process worker does not export
# processor_model_server_up 0 and trip ProcessorModelServerUnreachable.
MODEL_SERVER_UP = Gauge(
    "processor_model_server_up", "1 while the model server answers (circuit closed), else 0.", registry=None
)
MODEL_SERVER_READY = Gauge(
    "processor_model_server_ready", "The model server's readiness at the last check (1/0).", registry=None
)
MODEL_SERVER_REQUESTS = Counter(
    "processor_model_server_requests_total",
    "Remote inference requests, by outcome (ok | error).",
    ["outcome"],
    registry=None,
)
MODEL_SERVER_SECONDS = Histogram(
    "processor_model_server_request_seconds",
    "Remote inference request time (one batch).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)
MODEL_SERVER_IN_FLIGHT = Gauge(
    "processor_model_server_in_flight", "Remote inference requests in flight.", registry=None
)
MODEL_SERVER_WAITING = Gauge(
    "processor_model_server_waiting_batches",
    "Batches waiting for the model server (in flight or retrying).",
    registry=None,
)
_MODEL_SERVER = (
    MODEL_SERVER_UP,
    MODEL_SERVER_READY,
    MODEL_SERVER_REQUESTS,
    MODEL_SERVER_SECONDS,
    MODEL_SERVER_IN_FLIGHT,
    MODEL_SERVER_WAITING,
)


def register_model_server() -> None:
    """Serve the processor_model_server_* metrics from now on (the remote client calls it; idempotent)."""
    for collector in _MODEL_SERVER:
        with contextlib.suppress(ValueError):  # already registered
            REGISTRY.register(collector)


# The link to the broker (processor.brokerlink).
BROKER_UP = Gauge("processor_broker_up", "1 while the broker answers this worker's metadata probe, else 0.")
BROKER_OUTAGES = Counter("processor_broker_outages_total", "Times the broker stopped answering this worker.")
COMMIT_FAILURES = Counter(
    "processor_commit_failures_total",
    "Offset commits that failed, by reason (rebalanced | not_assigned | unavailable | refused | fatal); "
    "their offsets stay pending and are committed at the next interval.",
    ["reason"],
)
CLIENT_LOG_HELD = Counter(
    "processor_client_log_lines_held_total", "Repeated Kafka-client log lines held back (counted, not written)."
)
