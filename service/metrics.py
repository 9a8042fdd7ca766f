"""Prometheus metrics, summed over every process of the service (prometheus-client's multiprocess mode).

The HTTP processes record requests and their latency; the inference workers record decode, queue and inference
latency, batch sizes, routes, confidences, per-photo errors and which model runs on which provider; the supervisor
(the main process) counts inference workers it restarted. Each process
writes its samples to files under ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics`` merges them. ``use_metrics_dir`` must
run before the first metric is created in a process (``service.server.main`` does it before starting anything;
spawned workers inherit the environment variable).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.runtime.parent_death import sweep_dirs_of_dead_owners

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MODEL_INFO = "triage_model"
METRICS_DIR_PREFIX = "triage-metrics-"  # + "<pid of the service>-": a directory the service made for itself

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_CONFIDENCE_BUCKETS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)


def forget_process(pid: int) -> None:
    """Drop the live gauges of a process that died (its counters and histograms stay in the totals)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


def use_metrics_dir(directory: Path | None = None) -> tuple[Path, bool]:
    """Switch this process (and the processes it starts) to multiprocess metrics; returns ``(dir, created)``.

    Uses ``directory``, else ``$PROMETHEUS_MULTIPROC_DIR``, else a fresh temporary directory named after this
    process (``created`` is then True and the caller removes it at exit; the directories of services killed
    before they could are removed here). Stale sample files from an earlier run are deleted: the directory
    belongs to one running service.
    """
    created = False
    if directory is None:
        configured = os.environ.get(MULTIPROC_ENV)
        if configured:
            directory = Path(configured)
        else:
            sweep_orphan_metrics_dirs()
            directory = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-"))
            created = True
    directory.mkdir(parents=True, exist_ok=True)
    if not created:
        for stale in directory.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
    # prometheus-client picks its value store when first imported; pick again now that the directory is set.
    values.ValueClass = values.get_value_class()
    return directory, created


def sweep_orphan_metrics_dirs(base: Path | None = None) -> int:
    """Remove the temporary metrics directories of services that were killed outright; returns how many."""
    return sweep_dirs_of_dead_owners(base or Path(tempfile.gettempdir()), METRICS_DIR_PREFIX)


@dataclass(frozen=True)
class ServiceMetrics:
    http_requests: Counter
    http_latency: Histogram
    in_flight: Gauge
    decode_latency: Histogram
    queue_latency: Histogram
    inference_latency: Histogram
    batch_photos: Histogram
    batch_requests: Histogram
    routes: Counter
    review_reasons: Counter
    confidence: Histogram
    errors: Counter
    model: Gauge
    worker_restarts: Counter


def _create() -> ServiceMetrics:
    if not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError(f"metrics need {MULTIPROC_ENV}; call service.metrics.use_metrics_dir() first")
    return ServiceMetrics(
        http_requests=Counter(
            "triage_http_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=None
        ),
        http_latency=Histogram(
            "triage_request_seconds",
            "Total request time in the HTTP server",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=None,
        ),
        in_flight=Gauge(
            "triage_requests_in_flight",
            "Requests being handled right now (headers read, answer not yet sent), by endpoint",
            ["endpoint"],
            multiprocess_mode="livesum",
            registry=None,
        ),
        decode_latency=Histogram(
            "triage_decode_seconds",
            "Time to validate, decode and preprocess one photo",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        ),
        queue_latency=Histogram(
            "triage_queue_seconds",
            "Time a request waited between the HTTP server and an inference worker",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        ),
        inference_latency=Histogram(
            "triage_inference_seconds", "Time of one batched model run", buckets=_LATENCY_BUCKETS, registry=None
        ),
        batch_photos=Histogram(
            "triage_batch_photos", "Photos in one batched model run", buckets=_SIZE_BUCKETS, registry=None
        ),
        batch_requests=Histogram(
            "triage_batch_requests", "Requests handled together in one batch", buckets=_SIZE_BUCKETS, registry=None
        ),
        routes=Counter("triage_routes", "Routes given, per photo and per ticket", ["level", "route"], registry=None),
        review_reasons=Counter(
            "triage_review_reasons",
            "Photos sent to needs_review by reason: unsure (below the threshold) or unfamiliar (unlike training)",
            ["reason"],
            registry=None,
        ),
        confidence=Histogram(
            "triage_confidence",
            "Calibrated confidence of each routed photo",
            buckets=_CONFIDENCE_BUCKETS,
            registry=None,
        ),
        errors=Counter("triage_errors", "Rejected photos and requests by reason", ["reason"], registry=None),
        model=Gauge(
            MODEL_INFO,
            "The model each inference worker serves and the execution provider it really uses",
            ["name", "version", "sha256", "provider", "device"],
            multiprocess_mode="livemax",  # a dead worker's value goes with it (``forget_process``)
            registry=None,
        ),
        worker_restarts=Counter(
            "triage_worker_restarts",
            "Inference workers that died and were restarted in place, by endpoint",
            ["endpoint"],
            registry=None,
        ),
    )


_metrics: ServiceMetrics | None = None


def metrics() -> ServiceMetrics:
    """This process's metric objects, created on first use."""
    global _metrics
    if _metrics is None:
        _metrics = _create()
    return _metrics


def _collect() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def render() -> tuple[bytes, str]:
    """The merged samples of every process, in Prometheus text format, and their content type."""
    return generate_latest(_collect()), CONTENT_TYPE_LATEST


def live_models() -> list[dict[str, str]]:
    """The ``{name, version, sha256, provider, device}`` of every model a worker reported as loaded."""
    seen: list[dict[str, str]] = []
    for family in _collect().collect():
        if family.name != MODEL_INFO:
            continue
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "pid"}
            if sample.value > 0 and labels not in seen:
                seen.append(labels)
    return seen
