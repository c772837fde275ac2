"""deploy/: Kubernetes manifests, Prometheus rules and the Grafana dashboard, checked offline.

Kubernetes objects are validated with kubernetes-validate (strict: unknown fields fail), the KEDA
ScaledObject against the CRD schema in deploy/k8s/schemas, and the numbers that must agree across files
(partitions, threads, ports, grace periods) against each other. Prometheus rules go through
`promtool check rules` and `promtool test rules`; without promtool those tests skip, unless
PROCESSOR_TEST_REQUIRE_TOOLS=1 (CI sets it), where they fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from processor import metrics
from processor.settings import Settings
from processor.topics import bootstrap

ROOT = Path(__file__).parents[1]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
OVERLAYS = ("keda", "hpa", "model-server", "model-server-gpu", "keda-backfill-worker")
BACKFILL_OVERLAY = "keda-backfill-worker"
MODEL_SERVER_OVERLAYS = ("model-server", "model-server-gpu")
MODEL_SERVER = "listing-image-model-server"
KUBERNETES_VERSION = "1.30.0"
WORKER = "listing-image-processor"
SCRAPE_JOB = "listing-image-processor"

# The worker's metrics, as agreed for issue #16 (processor/metrics.py serves them).
CONTRACT_METRICS = {
    "processor_consumer_lag",
    "processor_oldest_unacked_age_seconds",
    "processor_stuck_partitions",
    "processor_events_total",
    "processor_dead_letters_total",
    "processor_batch_size",
    "processor_batches_total",
    "processor_model_info",
    "processor_last_progress_timestamp_seconds",
    "processor_event_latency_seconds",
    "processor_store_retries_total",
    "processor_cache_errors_total",
    "processor_fetch_responses_total",
    "processor_in_flight",
    "processor_broker_up",  # issue #25
    "processor_model_server_up",  # issue #24
}
HISTOGRAMS = {"processor_batch_size", "processor_event_latency_seconds"}
DEAD_LETTER_KINDS = {
    "invalid_event",
    "blocked_url",
    "fetch_failed",
    "too_large",
    "not_an_image",
    "model_error",
    "internal_error",
    "storage_rejected",
}
# A worker's RSS beyond its image buffers: 753 MB after a 15-minute soak, 804 MB at most in a backlog run
# (benchmarks/results/soak-2core.json, quick-2core-v2026.11.30.5.json), rounded up.
STEADY_RSS_MIB = 832


# ---------------------------------------------------------------------------------------------------
# A minimal kustomize: enough for what deploy/k8s uses, and loud about anything else.

_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "patches", "images"}
_CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    template = obj.get("spec", {}).get("template", {}).get("spec", {})
    return [*template.get("initContainers", []), *template.get("containers", [])]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A strategic-merge patch, for maps only (the subset deploy/k8s uses): loud about lists of objects."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            assert not (isinstance(value, list) and any(isinstance(v, dict) for v in value)), (
                f"render() does not merge lists of objects ({key}): extend it or patch maps only"
            )
            target[key] = copy.deepcopy(value)


def render(directory: Path, parent: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` prints, for resources, components, map patches, namespace
    and images only. A component (``parent`` given) adds to and patches the objects of its parent."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = kustomization.keys() - _KUSTOMIZATION_KEYS
    assert not unsupported, f"render() does not implement {unsupported}: extend it or keep kustomizations simple"
    objects: list[dict[str, Any]] = [] if parent is None else parent
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for component in kustomization.get("components", []):
        assert yaml.safe_load((directory / component / "kustomization.yaml").read_text())["kind"] == "Component"
        objects = render(directory / component, objects)
    for patch in kustomization.get("patches", []):
        assert patch.keys() == {"path"}, f"render() applies patch files only: {patch}"
        doc = yaml.safe_load((directory / patch["path"]).read_text())
        _merge(one(objects, doc["kind"], doc["metadata"]["name"]), doc)
    for obj in objects:
        if "namespace" in kustomization and obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for image in kustomization.get("images", []):
            for container in _containers(obj):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def config(base: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = one(base, "ConfigMap")["data"]
    return data


@pytest.fixture(scope="module")
def worker(base: list[dict[str, Any]]) -> dict[str, Any]:
    return one(base, "Deployment", WORKER)


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("name", OVERLAYS)
def test_render_matches_kustomize_where_installed(name: str) -> None:
    """Keeps the tests' renderer honest: same objects as the real kustomize (skipped without it)."""
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run([*command, str(K8S / "overlays" / name)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    def key(o: dict[str, Any]) -> str:
        return f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"

    theirs = {key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {key(o): o for o in render(K8S / "overlays" / name)}
    assert theirs == ours


# ---------------------------------------------------------------------------------------------------
# Schemas


def test_every_object_is_valid_kubernetes(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = overlay
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # not in kubernetes-validate; see test_scaled_object_matches_the_keda_crd
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_can_fail(worker: dict[str, Any]) -> None:
    broken = copy.deepcopy(worker)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """No unknown properties anywhere (the API server would prune them silently)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if schema.get("type") == "object" and "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((K8S / "schemas" / "keda.sh_scaledobjects.yaml").read_text())
    assert crd["spec"]["group"] == "keda.sh" and crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _scaled_object() -> dict[str, Any]:
    return one(render(K8S / "overlays" / "keda"), "ScaledObject")


def test_scaled_object_matches_the_keda_crd(keda_validator: jsonschema.protocols.Validator) -> None:
    scaled = _scaled_object()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda_validator.iter_errors(scaled)]
    assert not errors


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("spec", "triggers", 0, "metadata", "lagThreshold"), 1000, "is not of type 'string'"),
        (("spec", "maxReplicas"), 12, "Additional properties"),
        (("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "selectPolicy"), "max", "enum"),
    ],
)
def test_keda_schema_catches_mistakes(
    keda_validator: jsonschema.protocols.Validator, path: tuple[Any, ...], value: Any, why: str
) -> None:
    scaled = _scaled_object()
    target = scaled
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    messages = " ".join(e.message for e in keda_validator.iter_errors(scaled))
    assert why in messages or (why == "enum" and "is not one of" in messages)


# ---------------------------------------------------------------------------------------------------
# Settings, and the numbers that must agree across files


def test_configmap_holds_known_settings_and_no_secrets(config: dict[str, str]) -> None:
    names = {k.removeprefix("PROCESSOR_").lower(): v for k, v in config.items()}
    assert all(k.startswith("PROCESSOR_") for k in config)
    unknown = sorted(f"PROCESSOR_{k.upper()}" for k in names if k not in Settings.model_fields)
    assert not unknown, f"the ConfigMap sets variables no setting reads: {unknown}"
    settings = Settings.model_validate(names)
    assert settings.decode_threads >= 1, "0 means os.cpu_count(): the node's CPUs, not the pod's"
    assert settings.create_topics is False  # the topics Job owns topic creation
    assert settings.metrics_port > 0
    assert "PROCESSOR_POSTGRES_DSN" not in config and "PROCESSOR_REDIS_URL" not in config
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert set(example["stringData"]) == {"PROCESSOR_POSTGRES_DSN", "PROCESSOR_REDIS_URL"}


def test_only_one_autoscaler_per_overlay(base: list[dict[str, Any]], overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    assert not by_kind(base, "ScaledObject") and not by_kind(base, "HorizontalPodAutoscaler")
    autoscalers = [o["kind"] for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}]
    deployments = [WORKER, f"{WORKER}-backfill"] if name == BACKFILL_OVERLAY else [WORKER]
    assert autoscalers == [{"hpa": "HorizontalPodAutoscaler"}.get(name, "ScaledObject")] * len(deployments)
    targets = [o["spec"]["scaleTargetRef"]["name"] for o in by_kind(objects, "ScaledObject")]
    assert name == "hpa" or targets == deployments  # one autoscaler per Deployment
    # The autoscaler owns the count; a replicas field would reset it on every apply.
    assert all("replicas" not in one(objects, "Deployment", d)["spec"] for d in deployments)


def test_autoscalers_stop_at_the_partition_count(config: dict[str, str]) -> None:
    partitions = int(config["PROCESSOR_TOPIC_PARTITIONS"])
    scaled = _scaled_object()["spec"]
    hpa = one(render(K8S / "overlays" / "hpa"), "HorizontalPodAutoscaler")["spec"]
    assert scaled["maxReplicaCount"] == hpa["maxReplicas"] == partitions
    assert 2 <= scaled["minReplicaCount"] <= partitions and 2 <= hpa["minReplicas"] <= partitions
    assert scaled["fallback"]["replicas"] <= partitions
    for target in (scaled["scaleTargetRef"], hpa["scaleTargetRef"]):
        assert (target["kind"], target["name"]) == ("Deployment", WORKER)


def test_keda_reads_the_lag_of_the_workers_group_and_topics(config: dict[str, str]) -> None:
    triggers = _scaled_object()["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    topics = {t["metadata"]["topic"] for t in triggers}
    assert topics == {config["PROCESSOR_INPUT_TOPIC"], config["PROCESSOR_BACKFILL_TOPIC"]}
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config["PROCESSOR_CONSUMER_GROUP"]
        assert meta["bootstrapServers"] == bootstrap(config["PROCESSOR_BROKER_URL"])
        assert int(meta["lagThreshold"]) > 0
        assert meta["allowIdleConsumers"] == "false"  # never a worker without a partition


def test_backfill_workers_have_their_own_group_role_and_a_small_cpu_weight(
    keda_validator: jsonschema.protocols.Validator,
) -> None:
    """The keda-backfill-worker overlay: daily workers on the input topic, backfill workers on the backfill
    topic as the backfill role's group, Burstable with a small CPU request, each scaled on its own lag."""
    objects = render(K8S / "overlays" / BACKFILL_OVERLAY)
    config = one(objects, "ConfigMap")["data"]
    daily_deployment, backfill_deployment = (one(objects, "Deployment", d) for d in (WORKER, f"{WORKER}-backfill"))
    daily = _settings_of(config)
    backfill = _settings_of(config, _worker_container(backfill_deployment)["env"])
    assert (daily.worker_role, daily.idle_cpu) == ("daily", False)
    assert (backfill.worker_role, backfill.idle_cpu) == ("backfill", True)
    labels = backfill_deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "backfill-worker"  # not selected by the Service or the PDB
    for selector in (
        one(objects, "Service")["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items()
    resources = _worker_container(backfill_deployment)["resources"]
    assert _quantity(resources["requests"]["cpu"]) <= 0.25 * _quantity(resources["limits"]["cpu"])
    assert _quantity(resources["limits"]["cpu"]) == backfill.decode_threads
    assert resources == _worker_container(daily_deployment)["resources"] | {"requests": resources["requests"]}
    by_target = {o["spec"]["scaleTargetRef"]["name"]: o for o in by_kind(objects, "ScaledObject")}
    for deployment, settings in ((WORKER, daily), (f"{WORKER}-backfill", backfill)):
        scaled = by_target[deployment]
        assert not list(keda_validator.iter_errors(scaled))
        (trigger,) = scaled["spec"]["triggers"]
        assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (
            settings.group_id,
            settings.consumed_topic,
        )
        assert scaled["spec"]["maxReplicaCount"] == settings.topic_partitions
    assert by_target[f"{WORKER}-backfill"]["spec"]["minReplicaCount"] == 0


def test_hpa_scales_on_the_lag_metric_the_adapter_serves() -> None:
    hpa = one(render(K8S / "overlays" / "hpa"), "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "processor_consumer_lag"
    assert metric["external"]["target"]["type"] == "AverageValue"
    values = yaml.safe_load((K8S / "overlays" / "hpa" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["external"]
    assert rule["name"]["as"] == "processor_consumer_lag"
    assert "processor_consumer_lag" in rule["seriesQuery"]


def _worker_container(worker: dict[str, Any]) -> dict[str, Any]:
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    return container


def test_probes_hit_the_metrics_port_and_the_right_paths(worker: dict[str, Any], config: dict[str, str]) -> None:
    container = _worker_container(worker)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(config["PROCESSOR_METRICS_PORT"])
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == port, probe
    # Model load: the startup probe allows at least two minutes before liveness takes over.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    service = one(render(K8S / "base"), "Service", WORKER)
    assert service["metadata"]["name"] == SCRAPE_JOB
    assert service["spec"]["selector"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    assert ports[service["spec"]["ports"][0]["targetPort"]] == port


def test_termination_grace_outlasts_the_drain(worker: dict[str, Any], config: dict[str, str]) -> None:
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(config["PROCESSOR_SHUTDOWN_GRACE_S"]) + 10  # drain, then commit and leave the group


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_resources_match_the_threads_and_bound_memory(worker: dict[str, Any], config: dict[str, str]) -> None:
    container = _worker_container(worker)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    threads = int(config["PROCESSOR_DECODE_THREADS"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert _quantity(requests["cpu"]) == _quantity(limits["cpu"]) == threads == int(env["TF_NUM_INTRAOP_THREADS"])
    assert requests["memory"] == limits["memory"]  # Guaranteed QoS: not the first evicted
    settings = Settings.model_validate({k.removeprefix("PROCESSOR_").lower(): v for k, v in config.items()})
    worst = (
        STEADY_RSS_MIB * 2**20
        + settings.max_in_flight * settings.max_image_bytes
        + threads * settings.max_image_pixels * 3
    )
    assert worst <= _quantity(limits["memory"]), f"{worst / 2**20:.0f} MiB can exceed the {limits['memory']} limit"


def _pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def test_pods_run_non_root_on_a_read_only_root(
    base: list[dict[str, Any]], overlay: tuple[str, list[dict[str, Any]]]
) -> None:
    assert len(dict(_pod_specs(base))) == 3
    overlay_name, objects = overlay
    specs = dict(_pod_specs(objects))
    assert len(specs) == (4 if overlay_name in (*MODEL_SERVER_OVERLAYS, BACKFILL_OVERLAY) else 3)
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        mounts = set()
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"], name
            mounts |= {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, name  # Faust's data dir and Keras' cache live there


def test_jobs_migrate_and_create_topics(base: list[dict[str, Any]]) -> None:
    jobs = {j["spec"]["template"]["spec"]["containers"][0]["args"][0]: j for j in by_kind(base, "Job")}
    assert jobs["db"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]
    assert jobs["topics"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "create"]
    for job in jobs.values():
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
        assert job["spec"]["ttlSecondsAfterFinished"] > 0  # a finished Job goes, so the next apply can recreate it
    sources = {
        name: {next(iter(r)) for r in job["spec"]["template"]["spec"]["containers"][0]["envFrom"]}
        for name, job in jobs.items()
    }
    assert sources == {"db": {"configMapRef", "secretRef"}, "topics": {"configMapRef"}}  # topics: the broker only


def test_disruption_budget_covers_the_workers(base: list[dict[str, Any]], worker: dict[str, Any]) -> None:
    pdb = one(base, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    strategy = worker["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0, "a surplus worker gets no partition and never turns ready"


# ---------------------------------------------------------------------------------------------------
# The model server (issue #24): only in the model-server overlays, and the workers pointed at it there


def _model_server(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model server's Deployment and its one container."""
    deployment = one(objects, "Deployment", MODEL_SERVER)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def _settings_of(config: dict[str, str], env: list[dict[str, str]] | None = None) -> Settings:
    values = {**config, **{e["name"]: e["value"] for e in env or [] if e["name"].startswith("PROCESSOR_")}}
    unknown = sorted(k for k in values if k.removeprefix("PROCESSOR_").lower() not in Settings.model_fields)
    assert not unknown, f"variables no setting reads: {unknown}"
    return Settings.model_validate({k.removeprefix("PROCESSOR_").lower(): v for k, v in values.items()})


def test_model_server_only_where_asked(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    """Off by default: the keda and hpa overlays run the model in the workers, as before."""
    name, objects = overlay
    config = one(objects, "ConfigMap")["data"]
    servers = [o for o in objects if o["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"]
    if name not in MODEL_SERVER_OVERLAYS:
        assert not servers and "PROCESSOR_INFERENCE_URL" not in config
        return
    assert sorted(o["kind"] for o in servers) == ["Deployment", "Service"]
    assert _settings_of(config).inference_url


@pytest.mark.parametrize("name", MODEL_SERVER_OVERLAYS)
def test_workers_call_the_model_server_service(name: str) -> None:
    from processor.inference import _endpoint
    from processor.serving.repository import DEFAULT_MODEL_NAME

    objects = render(K8S / "overlays" / name)
    settings = _settings_of(one(objects, "ConfigMap")["data"])
    service = one(objects, "Service", MODEL_SERVER)
    deployment, container = _model_server(objects)
    protocol, address = _endpoint(settings.inference_url)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert address == f"{MODEL_SERVER}:{ports[protocol]['port']}"
    assert settings.inference_model == DEFAULT_MODEL_NAME  # the name serve-model and export-triton serve under
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in ports.values()} <= container_ports.keys()
    assert container_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container_ports["metrics"]
    # The workers' Service, PDB and Deployment never select a model-server pod (nor the reverse).
    for kind in ("Service", "PodDisruptionBudget", "Deployment"):
        worker_obj = one(objects, kind, WORKER)["spec"]
        selector = worker_obj.get("selector", {})
        selector = selector.get("matchLabels", selector)
        assert not selector.items() <= pod_labels.items(), kind
    assert (
        not service["spec"]["selector"].items()
        <= one(objects, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("name", MODEL_SERVER_OVERLAYS)
def test_model_server_probes_use_triton_health(name: str) -> None:
    deployment, container = _model_server(render(K8S / "overlays" / name))
    expected = {
        "startupProbe": "/v2/health/live",
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # Triton start and model load
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests["cpu"] == limits["cpu"] and requests["memory"] == limits["memory"]  # Guaranteed QoS
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"  # more than the runtime's 64 MiB


def test_cpu_model_server_runs_serve_model() -> None:
    objects = render(K8S / "overlays" / "model-server")
    deployment, container = _model_server(objects)
    assert container["args"] == ["serve-model"]
    assert container["image"].startswith("ghcr.io/example/listing-image-model-server:")
    sources = {next(iter(r)) for r in container["envFrom"]}
    assert sources == {"configMapRef", "secretRef"}  # the Postgres DSN: it follows the model registry
    settings = _settings_of(one(objects, "ConfigMap")["data"], container["env"])
    assert settings.model_server_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["http"], ports["grpc"], ports["metrics"]) == (
        settings.model_server_http_port,
        settings.model_server_grpc_port,
        settings.model_server_metrics_port,
    )
    cpus = _quantity(container["resources"]["limits"]["cpu"])
    assert settings.model_server_instances * settings.model_server_threads == cpus
    assert (
        deployment["spec"]["replicas"] >= 2 and deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS model-server$", dockerfile, re.MULTILINE)
    assert 'CMD ["serve-model"]' in dockerfile


def test_gpu_model_server_runs_nvidia_triton_on_a_gpu_node(tmp_path: Path) -> None:
    """NVIDIA's image over the repository the init container exports (run here with the same arguments)."""
    from click.testing import CliRunner

    from processor.serving.cli import export_triton
    from processor.serving.repository import CONFIG_FILE, parse_config

    objects = render(K8S / "overlays" / "model-server-gpu")
    deployment, container = _model_server(objects)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert container["command"] == ["tritonserver"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (int(flags["http-port"]), int(flags["grpc-port"]), int(flags["metrics-port"])) == (
        ports["http"],
        ports["grpc"],
        ports["metrics"],
    )
    assert flags["strict-readiness"] == "true"
    (init,) = pod["initContainers"]
    assert init["image"].startswith("ghcr.io/example/listing-image-model-server:")
    command, out, *options = init["args"]
    assert command == "export-triton" and "--kind=gpu" in options
    shared = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    (served,) = [m for m in container["volumeMounts"] if m["mountPath"] == flags["model-repository"]]
    assert shared[out] == served["name"] and served["readOnly"] is True
    # The init container's own command, with its arguments, writes a repository Triton's schema accepts.
    result = CliRunner().invoke(export_triton, [str(tmp_path), *options])
    assert result.exit_code == 0, result.output
    model = _settings_of(one(objects, "ConfigMap")["data"]).inference_model
    config = parse_config((tmp_path / model / CONFIG_FILE).read_text())
    assert config.name == model and config.backend == "onnxruntime"
    assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_GPU]
    assert (tmp_path / model / "1" / "model.onnx").is_file()


# ---------------------------------------------------------------------------------------------------
# Prometheus and Grafana

_METRIC = re.compile(r"\b(processor_[a-z0-9_]+|up)\b")


def referenced_metrics(text: str) -> set[str]:
    names = set()
    for name in _METRIC.findall(text):
        base_name = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base_name if base_name in HISTOGRAMS else name)
    return names


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("PROCESSOR_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail("promtool is missing (apt-get install prometheus) and PROCESSOR_TEST_REQUIRE_TOOLS=1")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid(promtool: str) -> None:
    result = _run([promtool, "check", "rules", "alerts.yml"], PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = _run([promtool, "test", "rules", "alerts.test.yml"], PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation (the stuck-partition alert on a healthy series) makes promtool fail."""
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    case = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": "processor_stuck_partitions", "values": "0x20"}],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "ProcessorStuckPartition",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    }
                ],
            }
        ],
    }
    (tmp_path / "wrong.test.yml").write_text(yaml.safe_dump(case))
    result = _run([promtool, "test", "rules", "wrong.test.yml"], tmp_path)
    assert result.returncode != 0 and "ProcessorStuckPartition" in result.stdout + result.stderr


def test_prometheus_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """prometheus.yml as compose mounts it, with the rule file at its mounted path replaced by ours."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = _run([promtool, "check", "config", "prometheus.yml"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_issue_and_each_has_a_test_and_a_runbook() -> None:
    alerts = {rule["alert"]: rule for rule in _alert_rules() if "alert" in rule}
    required = {
        "ProcessorConsumerLagGrowing",
        "ProcessorDeadLetterRateHigh",
        "ProcessorStuckPartition",
        "ProcessorNoProgress",
        "ProcessorErrorRateHigh",
        "ProcessorWorkerDown",
        "ProcessorNoWorkers",
        "ProcessorModelServerUnreachable",  # issue #24
    }
    assert required <= alerts.keys()
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts.keys() <= tested, f"alerts never shown firing: {alerts.keys() - tested}"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        # One runbook page per alert, in the docs site's Operations section (tests/test_docs.py builds it).
        runbook = rule["annotations"]["runbook_url"]
        assert runbook == f"docs/operations/runbooks/{name}.md", (name, runbook)
        page = ROOT / runbook
        assert page.is_file(), f"{name}: no runbook page {runbook}"
        assert page.read_text().startswith(f"# {name}\n"), f"{runbook} is not the page of {name}"
        assert f"<!-- generate: alert {name} -->" in page.read_text(), f"{runbook} does not show the rule"


def test_alerts_use_contract_metrics_only() -> None:
    exprs = " ".join(rule["expr"] for rule in _alert_rules())
    used = referenced_metrics(exprs)
    assert used - {"up"} <= CONTRACT_METRICS, used - CONTRACT_METRICS - {"up"}
    assert f'up{{job="{SCRAPE_JOB}"}}' in exprs
    kinds = set(re.findall(r'kind=~"([^"]+)"', exprs)[0].split("|"))
    assert kinds <= DEAD_LETTER_KINDS


def test_dashboard_references_contract_metrics_only() -> None:
    text = DASHBOARD.read_text()
    dashboard = json.loads(text)
    used = referenced_metrics(text)
    assert used - {"up"} <= CONTRACT_METRICS, f"not in the metrics contract: {used - CONTRACT_METRICS - {'up'}}"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for needed in (
        "processor_consumer_lag",
        "processor_oldest_unacked_age_seconds",
        "processor_events_total",
        "processor_dead_letters_total",
        "processor_batch_size",
        "processor_event_latency_seconds",
        "processor_model_info",
    ):
        assert needed in exprs, f"no panel shows {needed}"
    assert "histogram_quantile(0.95, sum by (le) (rate(processor_event_latency_seconds_bucket" in exprs


def test_the_worker_serves_the_contract_metrics() -> None:
    """What the dashboard and alerts read is what processor/metrics.py defines, with the same labels."""
    served: dict[str, tuple[str, ...]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            suffix = "_total" if collector._type == "counter" else ""
            served[collector._name + suffix] = tuple(collector._labelnames)
    missing = CONTRACT_METRICS - served.keys()
    assert not missing, f"not defined in processor/metrics.py: {missing}"
    labels = {
        "processor_consumer_lag": ("topic", "partition"),
        "processor_oldest_unacked_age_seconds": ("topic", "partition"),
        "processor_events_total": ("outcome",),
        "processor_dead_letters_total": ("kind",),
        "processor_batches_total": ("reason",),
        "processor_model_info": ("name", "version"),
        "processor_fetch_responses_total": ("status",),
    }
    assert {name: served[name] for name in labels} == labels


def test_only_remote_workers_export_the_model_server_metrics() -> None:
    """An in-process worker must not export processor_model_server_up 0 (ProcessorModelServerUnreachable)."""
    code = (
        "from prometheus_client import generate_latest\n"
        "from processor import metrics\n"
        "before = generate_latest().decode()\n"
        "metrics.register_model_server(); metrics.register_model_server()\n"
        "after = generate_latest().decode()\n"
        "print('processor_model_server_up ' in before, 'processor_model_server_up 0.0' in after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        area = {(x, y) for x in xs for y in ys}
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
