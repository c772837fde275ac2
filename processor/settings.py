"""One frozen settings object: ``PROCESSOR_*`` environment variables, CLI flags on top."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .listings.rules import DEFAULT_PREFERRED, DEFAULT_REQUIRED, HeroRule, ListingRules

DEFAULT_MODEL_DIR = Path(__file__).parent / "models" / "default"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """Everything a worker, the CLI and the demo need; immutable once built."""

    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", frozen=True, extra="ignore")

    broker_url: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap URL(s).")
    input_topic: str = Field("images", description="Topic of incoming image events.")
    backfill_topic: str = Field(
        "images-backfill", description="Topic of backfill events, consumed at a lower priority."
    )
    backfill_max_in_flight: int = Field(8, ge=1, description="Backfill events being processed at once per worker.")
    backfill_yield_at: int = Field(
        4,
        ge=1,
        description="Backfill events wait while this many daily events are decoding or waiting for inference "
        "(not while they download: that takes no CPU).",
    )
    worker_role: Literal["all", "daily", "backfill"] = Field(
        "all",
        description="What `processor worker` consumes: all (the input topic, and the backfill topic at a lower "
        "priority in the same process), daily (the input topic only), or backfill (the backfill topic only, as "
        "the consumer group <consumer_group>-backfill, without the listing actor: run it beside daily workers).",
    )
    cpu_priority: Literal["auto", "normal", "idle"] = Field(
        "auto",
        description="The worker's CPU scheduling: idle (Linux SCHED_IDLE, else nice 19: it runs only on CPU "
        "time that normal processes of its cgroup leave), normal, or auto (idle for the backfill role).",
    )
    output_topic: str = Field("image-classifications", description="Topic of results.")
    dlq_topic: str = Field("images-dlq", description="Topic of dead-letter records.")
    removals_topic: str = Field("image-removals", description="Topic of image removals (deleted: true events).")
    topic_partitions: int = Field(8, ge=1, description="Partitions when the processor creates topics.")
    topic_replication_factor: int = Field(1, ge=1, description="Replicas per partition when creating topics.")
    topic_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1, description="retention.ms of created topics (-1: keep forever)."
    )
    create_topics: bool = Field(
        True, description="Worker creates missing topics at start (off in production: `processor topics create`)."
    )
    consumer_group: str = Field("listing-image-processor", description="Kafka consumer group id.")
    broker_session_timeout_s: float = Field(6.0, gt=0, description="Consumer session timeout.")
    broker_heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    broker_commit_interval_s: float = Field(1.0, gt=0, description="How often acked offsets are committed.")
    broker_fetch_max_wait_ms: int = Field(
        50, ge=1, description="Longest wait of a consumer fetch at the log end; Tansu holds a fetch up to this long."
    )
    broker_fetch_behind_wait_ms: int = Field(
        500,
        ge=1,
        description="Longest wait of a consumer fetch while a partition is behind its log end: the broker's time "
        "to read older records (Tansu on S3 returns none when a read takes longer). Doubled while the broker runs out "
        "of it, up to 8 times (and half broker_request_timeout_s).",
    )
    broker_request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for one consumer request (fetch, commit, metadata); a connection silent for longer "
        "is dropped and opened again. At least broker_session_timeout_s.",
    )
    producer_request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for the broker to confirm a published record (the producer retries within it); "
        "then the publish fails and the sink publishes again, its event still unacknowledged.",
    )
    broker_probe_interval_s: float = Field(2.0, gt=0, description="How often the broker is probed for readiness.")
    broker_probe_timeout_s: float = Field(
        3.0, gt=0, description="A broker that does not answer a probe within this is unreachable: readiness false."
    )

    postgres_dsn: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", description="Postgres DSN.")
    postgres_table: str = Field("image_classifications", description="Table of classifications.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL; empty disables the cache.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Lifetime of cached results.")
    revalidate_after_s: float = Field(
        0.0,
        ge=0,
        description="A URL seen again is revalidated (conditional GET: 304 keeps the result) once its cached "
        "result is this old; 0: every time.",
    )

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="Directory with model.keras and metadata.json.")
    batch_size: int = Field(32, ge=1, le=1024, description="Largest inference batch.")
    batch_delay_ms: float = Field(20.0, ge=0, description="Longest wait after a batch's first image.")
    batch_latency_budget_ms: float = Field(
        50.0,
        ge=0,
        description="Latency budget of an inference batch (its first image's wait plus the batch's run): a batch "
        "closes as soon as waiting longer cannot pay (the arrival rate needs no bigger batch, or the images it "
        "waits for would not come in time); 0: close on batch_size or batch_delay_ms only.",
    )
    banner_threshold: float | None = Field(None, description="Override the model's banner threshold.")
    inference_runtime: Literal["auto", "keras", "onnx", "openvino"] = Field(
        "auto",
        description="auto: OpenVINO, else ONNX Runtime, where the model directory has model.onnx (CPU hosts) and "
        "KERAS_BACKEND is unset or tensorflow, else Keras (GPU hosts: KERAS_BACKEND=jax).",
    )
    inference_precision: Literal["auto", "f32", "bf16", "int8"] = Field(
        "auto",
        description="OpenVINO's inference precision; auto: int8 where the model directory has model-int8.xml "
        "(processor quantize), else bf16 on CPUs with native bf16, else f32; f32 or bf16: the float model.",
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="The worker's event loop; auto: uvloop where it is installed, else asyncio's."
    )
    inference_threads: int = Field(
        0,
        ge=0,
        description="Threads of the in-worker runtime (OpenVINO, ONNX Runtime) for one batch; 0: the runtime's "
        "default (one per core). 1 spends less CPU per image on a busy host, but small batches wait longer.",
    )
    inference_one_thread_upto: int = Field(
        0,
        ge=0,
        description="OpenVINO runs batches of at most this many images on one thread (their batch sizes "
        "compile with one thread): on small batches a second thread costs ~60 % more CPU per image for 1-3 ms "
        "less. 4 took a daily worker at a quarter load from 0.91 to 0.77 cores, for a worse p95 beside a "
        "backfill in some runs; 0: every batch on inference_threads.",
    )
    inference_spin: bool = Field(
        False,
        description="Let ONNX Runtime's threads spin between operators (faster alone, but they take the CPU "
        "that decoding needs in the same process).",
    )
    follow_registry: bool = Field(
        True, description="Load the model promoted in Postgres (processor model promote) without a restart."
    )

    inference_url: str = Field(
        "",
        description="A model server (Open Inference Protocol: http://host:8000 or grpc://host:8001) that scores the "
        "batches instead of this process; empty: the model runs in the worker.",
    )
    inference_model: str = Field("listing-image-classifier", description="The model's name on the model server.")
    inference_timeout_s: float = Field(10.0, gt=0, description="Longest wait for one remote inference request.")
    inference_backoff_s: float = Field(0.1, ge=0, description="First retry backoff of a failed request; doubles.")
    inference_max_in_flight: int = Field(4, ge=1, description="Remote inference requests (batches) in flight at once.")
    inference_breaker_failures: int = Field(
        3, ge=1, description="Failed requests in a row that open the circuit (requests stop, events wait)."
    )
    inference_breaker_reset_s: float = Field(
        2.0, gt=0, description="While the circuit is open, one probe request this often."
    )
    model_server_host: str = Field("127.0.0.1", description="processor serve-model: the address it listens on.")
    model_server_http_port: int = Field(8000, ge=0, description="processor serve-model: HTTP port (KServe v2).")
    model_server_grpc_port: int = Field(8001, ge=0, description="processor serve-model: gRPC port (KServe v2).")
    model_server_metrics_port: int = Field(8002, ge=0, description="processor serve-model: Triton's metrics port.")
    model_server_max_batch_size: int = Field(64, ge=1, description="processor serve-model: largest server batch.")
    model_server_preferred_batch_sizes: Annotated[tuple[int, ...], NoDecode] = Field(
        (8, 16, 32), description="processor serve-model: batch sizes the dynamic batcher aims for (comma-separated)."
    )
    model_server_max_queue_delay_ms: float = Field(
        2.0, ge=0, description="processor serve-model: longest wait of a request for others to batch with."
    )
    model_server_instances: int = Field(1, ge=1, description="processor serve-model: model instances (processes).")
    model_server_threads: int = Field(1, ge=1, description="processor serve-model: ONNX Runtime threads per instance.")
    model_server_repository: Path | None = Field(
        None, description="processor serve-model: model repository folder; default: a new temporary one."
    )

    max_in_flight: int = Field(256, ge=1, description="Events being processed at once per worker.")
    max_unacked_per_partition: int = Field(
        512, ge=1, description="Unacknowledged events per partition; beyond it the partition pauses, others go on."
    )
    stuck_after_s: float = Field(120.0, gt=0, description="A partition whose oldest unacked event is older is stuck.")
    liveness_stall_s: float = Field(300.0, gt=0, description="Liveness fails when events wait this long unacked.")
    monitor_interval_s: float = Field(5.0, gt=0, description="How often lag, ages and Postgres health are checked.")
    fetch_concurrency: int = Field(64, ge=1, description="Concurrent HTTP connections per worker.")
    fetch_connect_timeout_s: float = Field(3.0, gt=0, description="TCP/TLS connect timeout.")
    fetch_read_timeout_s: float = Field(5.0, gt=0, description="Longest pause between body chunks.")
    fetch_total_timeout_s: float = Field(15.0, gt=0, description="Whole-download timeout.")
    fetch_attempts: int = Field(4, ge=1, description="Attempts for transient fetch failures.")
    fetch_backoff_s: float = Field(0.2, ge=0, description="First retry backoff; doubles each time.")
    max_redirects: int = Field(5, ge=0, description="Redirect hops followed, each re-checked.")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Byte cap, enforced while streaming.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Pixel cap, checked before decoding.")
    max_event_bytes: int = Field(64 * 1024, ge=1, description="Largest accepted input event.")
    event_time_max_past_days: int = Field(3650, ge=1, description="Oldest accepted event_time, in days before now.")
    event_time_max_future_s: float = Field(300.0, ge=0, description="Latest accepted event_time, in seconds ahead.")
    allow_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        (), description="Private/loopback CIDRs that may be fetched from (comma-separated)."
    )
    decode_threads: int = Field(0, ge=0, description="Decode threads; 0 means one per CPU.")
    store_batch_size: int = Field(256, ge=1, description="Rows per Postgres/topic flush.")
    store_batch_delay_ms: float = Field(10.0, ge=0, description="Longest wait before a flush.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Time to drain in-flight work on SIGTERM.")
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics port; 0 disables it.")
    log_level: str = Field("INFO", description="Logging level.")

    listings_enabled: bool = Field(True, description="Run the listing actor (hero, coverage, feed per listing).")
    listing_updates_topic: str = Field("listing-updates", description="Topic of listing states, one per change.")
    listings_table: str = Field("listings", description="Table of listing states.")
    listing_hero_rule: str = Field(
        "preferred_position", description="first_banner_free, or preferred_position (then listing order)."
    )
    listing_preferred_positions: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_PREFERRED, description="Hero preference among banner-free images (comma-separated)."
    )
    listing_required_positions: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_REQUIRED, description="Positions a complete listing shows (comma-separated); coverage score."
    )
    fetch_per_host: int = Field(
        16, ge=1, description="Concurrent HTTP connections per host, so a slow host cannot take the pool."
    )
    fetch_pool_wait_s: float = Field(
        10.0, gt=0, description="Longest wait for a free connection; the whole-download timeout starts after it."
    )
    fetch_max_retry_after_s: float = Field(5.0, ge=0, description="Longest Retry-After wait honoured per retry.")
    max_decode_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Memory one decode may take, estimated from the header before decoding."
    )
    large_decode_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Decodes estimated above this are large.")
    large_decode_slots: int = Field(2, ge=1, description="Large decodes at once per worker; others wait for a slot.")

    @field_validator("listing_preferred_positions", "listing_required_positions", mode="before")
    @classmethod
    def _split(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value)

    @field_validator("model_server_preferred_batch_sizes", mode="before")
    @classmethod
    def _split_ints(cls, value: Any) -> tuple[int, ...]:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return tuple(value)

    @model_validator(mode="after")
    def _request_outlasts_session(self) -> Settings:
        if self.broker_session_timeout_s > self.broker_request_timeout_s:
            raise ValueError("broker_session_timeout_s must not exceed broker_request_timeout_s")
        return self

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> tuple[Network, ...]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)

    @property
    def consumed_topic(self) -> str:
        """The topic the image agent reads: the backfill topic for the backfill role, else the input topic."""
        return self.backfill_topic if self.worker_role == "backfill" else self.input_topic

    @property
    def group_id(self) -> str:
        """The Kafka consumer group the worker joins (backfill workers have one of their own)."""
        return f"{self.consumer_group}-backfill" if self.worker_role == "backfill" else self.consumer_group

    @property
    def idle_cpu(self) -> bool:
        """Whether the worker runs at idle CPU priority."""
        return self.cpu_priority == "idle" or (self.cpu_priority == "auto" and self.worker_role == "backfill")

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics a worker reads and writes: input, output, dead letters, removals, listing updates."""
        return (
            self.input_topic,
            self.backfill_topic,
            self.output_topic,
            self.dlq_topic,
            self.removals_topic,
            self.listing_updates_topic,
        )

    def listing_rules(self) -> ListingRules:
        return ListingRules(
            hero_rule=HeroRule(self.listing_hero_rule),
            preferred_positions=self.listing_preferred_positions,
            required_positions=self.listing_required_positions,
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced and re-validated."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return Settings.model_validate(data)
