"""What the rendered manifests promise: restricted pod security, resources, probes and shutdown timing that fit
the service, settings the service accepts, wiring between objects, and the GPU overlay's scheduling."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import container, only, settings_env

from service.runtime.supervisor import _WORKER_EXIT_S
from service.settings import SHIPPED_MODEL, Settings

ROOT = Path(__file__).resolve().parents[2]
OVERLAY_TARGETS = ("cpu", "gpu")
ALL_TARGETS = (*OVERLAY_TARGETS, "cpu+keda+servicemonitor+prometheusrule", "gpu+keda+servicemonitor+prometheusrule")
MIB = 1024 * 1024
_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "": 1}


def cpu(value: str | int) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi|)", value).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's effective environment: the ConfigMap's keys, overridden by its own env entries."""
    values: dict[str, Any] = dict(settings_env(docs))
    for item in container(docs).get("env", []):
        values[item["name"]] = item.get("value", item.get("valueFrom"))
    return values


def settings_from(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("TRIAGE_"):
            monkeypatch.delenv(key)
    for key, value in settings_env(docs).items():
        monkeypatch.setenv(key, value)
    return Settings()


# ---------------------------------------------------------------------------------------------------------------
# Pod security: the Restricted Pod Security Standard, and a read-only root with emptyDirs where the service writes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_pod_meets_the_restricted_standard(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    pod = pod_spec(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    sc = container(docs)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(set(v) <= {"name", "emptyDir", "configMap", "secret", "projected"} for v in pod["volumes"])
    namespace = only(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pod_user_is_the_image_user(rendered: dict[str, list[dict[str, Any]]]) -> None:
    users = set(re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M))
    assert len(users) == 1
    uid, gid = map(int, users.pop())
    for target in OVERLAY_TARGETS:
        pod = pod_spec(rendered[target])
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)


@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_writable_paths_are_emptydirs(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container(docs)["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    assert "sizeLimit" in mounts["/tmp"]["emptyDir"]
    metrics_dir = env_of(docs)["PROMETHEUS_MULTIPROC_DIR"]
    assert metrics_dir in mounts and metrics_dir != "/tmp"
    assert mounts[metrics_dir]["emptyDir"]["medium"] == "Memory"
    if target == "gpu":
        assert env_of(docs)["CUDA_CACHE_PATH"].startswith("/tmp/")


# ---------------------------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_requests_and_limits_are_set_and_consistent(
    rendered: dict[str, list[dict[str, Any]]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[target]
    resources = container(docs)["resources"]
    for key in ("cpu", "memory", "ephemeral-storage"):
        assert key in resources["requests"] and key in resources["limits"], key
    assert cpu(resources["requests"]["cpu"]) <= cpu(resources["limits"]["cpu"])
    for key in ("memory", "ephemeral-storage"):
        assert memory(resources["requests"][key]) <= memory(resources["limits"][key])
    # emptyDirs on disk count against the pod's ephemeral-storage limit; memory-backed ones against memory.
    volumes = pod_spec(docs)["volumes"]
    disk = sum(memory(v["emptyDir"]["sizeLimit"]) for v in volumes if v["emptyDir"].get("medium") != "Memory")
    assert disk < memory(resources["limits"]["ephemeral-storage"])
    # ONNX Runtime threads of all workers fit in the CPU limit (0 would size them by the node's cores).
    settings = settings_from(docs, monkeypatch)
    assert settings.ort_threads >= 1
    assert settings.ort_threads * settings.workers_per_device <= cpu(resources["limits"]["cpu"])


def test_gpu_overlay_asks_for_one_gpu_on_a_gpu_node(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered["gpu"]
    resources = container(docs)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    pod = pod_spec(docs)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert settings_from(docs, monkeypatch).device == "cuda"
    assert env_of(docs)["CUDA_VISIBLE_DEVICES"] == "0"
    assert container(docs)["image"].endswith("-gpu")
    # The startup probe allows CUDA initialisation more time than the CPU pods get.
    gpu_probe, cpu_probe = container(docs)["startupProbe"], container(rendered["cpu"])["startupProbe"]
    assert gpu_probe["failureThreshold"] * gpu_probe["periodSeconds"] > (
        cpu_probe["failureThreshold"] * cpu_probe["periodSeconds"]
    )


def test_cpu_overlay_stays_off_gpus(rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered["cpu"]
    assert "nvidia.com/gpu" not in container(docs)["resources"]["limits"]
    assert "nodeSelector" not in pod_spec(docs)
    assert settings_from(docs, monkeypatch).device == "cpu"
    assert container(docs)["image"].endswith("-cpu")


# ---------------------------------------------------------------------------------------------------------------
# Probes and shutdown
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_probes_are_distinct_and_fit_the_service(
    rendered: dict[str, list[dict[str, Any]]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[target]
    c = container(docs)
    startup, readiness, liveness = c["startupProbe"], c["readinessProbe"], c["livenessProbe"]
    # Start-up and readiness ask /health, which answers 200 only once every worker has loaded and warmed up.
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert readiness["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # Liveness is a different, cheaper check, which load cannot fail: an overloaded pod is not restarted.
    assert "httpGet" not in liveness
    assert liveness["tcpSocket"] == {"port": "http"}
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 30
    # The service's own request timeout is not cut short by a probe: probes time out within their period.
    for probe in (startup, readiness, liveness):
        assert probe["timeoutSeconds"] < probe["periodSeconds"]
    assert c["ports"] == [{"name": "http", "containerPort": settings_from(docs, monkeypatch).port, "protocol": "TCP"}]


@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_grace_period_covers_prestop_and_the_supervisors_drain(
    rendered: dict[str, list[dict[str, Any]]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered[target]
    settings = settings_from(docs, monkeypatch)
    pause = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 3  # endpoints and load balancers stop sending before SIGTERM
    # service/runtime/supervisor.py: HTTP servers drain within drain_timeout + 0.5 s, workers get _WORKER_EXIT_S more.
    shutdown = settings.drain_timeout + 0.5 + _WORKER_EXIT_S
    grace = pod_spec(docs)["terminationGracePeriodSeconds"]
    assert pause + shutdown + 2 <= grace
    # The drain bound of the settings class keeps this true for any valid TRIAGE_DRAIN_TIMEOUT.
    upper = Settings.model_fields["drain_timeout"].metadata
    bound = min(m.le for m in upper if getattr(m, "le", None) is not None)
    assert pause + bound + 0.5 + _WORKER_EXIT_S + 2 <= grace
    # Requests get at most request_timeout; a pod being replaced still answers the short ones in flight.
    assert settings.drain_timeout < settings.request_timeout


# ---------------------------------------------------------------------------------------------------------------
# Settings: the ConfigMap is what the settings class reads, with its model path and port
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_configmap_holds_only_settings_the_service_reads(
    rendered: dict[str, list[dict[str, Any]]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = settings_env(rendered[target])
    fields = {f"TRIAGE_{name.upper()}" for name in Settings.model_fields}
    # The settings class ignores unknown variables, so a misspelt key would silently do nothing.
    assert set(env) <= fields, set(env) - fields
    assert "TRIAGE_API_KEY" not in env  # from the Secret, never the ConfigMap
    settings_from(rendered[target], monkeypatch)  # accepted by the settings class, validators included


def test_model_path_and_port_equal_the_settings_defaults(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdirs = set(re.findall(r"^WORKDIR (\S+)$", dockerfile, re.M)) - {"/src"}
    assert workdirs == {"/app"}
    default_model = Path(workdirs.pop()) / SHIPPED_MODEL  # what the default resolves to in the image's WORKDIR
    default_port = Settings.model_fields["port"].default
    # The image puts the model exactly where the default path points from its working directory.
    copied = f"artifacts/{default_model.name} artifacts/model_card.json artifacts/report.html"
    assert f"COPY {copied} {default_model.parent}/" in dockerfile
    assert re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M) == [str(default_port)] * 2
    for target in OVERLAY_TARGETS:
        docs = rendered[target]
        settings = settings_from(docs, monkeypatch)
        assert settings.model_path == default_model
        assert settings.port == default_port
        template = only(docs, "Deployment")["spec"]["template"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(default_port)


def test_api_key_comes_from_an_optional_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for target in OVERLAY_TARGETS:
        env = {e["name"]: e for e in container(rendered[target])["env"]}
        ref = env["TRIAGE_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "triage-api-key", "key": "api-key", "optional": True}
        assert not any(d["kind"] == "Secret" for d in rendered[target])


# ---------------------------------------------------------------------------------------------------------------
# Wiring between objects
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL_TARGETS)
def test_selectors_match_the_pods(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = only(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert only(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/variant"] == target.split("+")[0]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    config = only(docs, "ConfigMap")["metadata"]["name"]
    assert container(docs)["envFrom"] == [{"configMapRef": {"name": config}}]
    account = only(docs, "ServiceAccount")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_exactly_one_autoscaler_targets_the_deployment(rendered: dict[str, list[dict[str, Any]]], target: str) -> None:
    docs = rendered[target]
    name = only(docs, "Deployment")["metadata"]["name"]
    scalers = [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    assert len(scalers) == 1
    spec = scalers[0]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    low = spec.get("minReplicas", spec.get("minReplicaCount"))
    assert low >= 2  # with the PodDisruptionBudget's maxUnavailable 1, a drain never takes the service down
    # GPU pods are bounded by the GPU pool, whichever autoscaler is in use.
    high = spec.get("maxReplicas", spec.get("maxReplicaCount"))
    assert high == (4 if target.startswith("gpu") else 10)
    assert only(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    if scalers[0]["kind"] == "HorizontalPodAutoscaler":
        assert spec["metrics"][0]["resource"]["name"] == "cpu"
    else:
        types = [t["type"] for t in spec["triggers"]]
        assert types.count("prometheus") == 2 and "cpu" in types


def test_service_monitor_scrapes_the_service_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu+keda+servicemonitor+prometheusrule"]
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/variant"]


def test_network_policy_admits_only_the_http_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    policy = only(rendered["cpu"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["egress"] == []  # the model is in the image; the service calls nothing
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]
