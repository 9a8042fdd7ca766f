"""Metrics across processes: a dead worker's model gauge leaves with it, its counters stay in the totals."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from service.metrics import forget_process, live_models, metrics, render


def _serve(version: str) -> None:
    m = metrics()
    m.model.labels(name="triage", version=version, sha256=version, provider="CPUExecutionProvider", device="cpu").set(1)
    m.errors.labels(reason=f"counted_by_{version}").inc()


def _worker(version: str) -> int:
    process = mp.get_context("fork").Process(target=_serve, args=(version,))
    process.start()
    process.join()
    assert process.pid is not None
    return process.pid


def test_a_dead_workers_model_leaves_the_gauge_but_its_counts_stay(metrics_dir: Path) -> None:
    old, new = _worker("0.9.0-old"), _worker("0.9.1-new")
    try:
        assert {"0.9.0-old", "0.9.1-new"} <= {m["version"] for m in live_models()}
        forget_process(old)
        versions = {m["version"] for m in live_models()}
        assert "0.9.1-new" in versions and "0.9.0-old" not in versions
        assert 'triage_errors_total{reason="counted_by_0.9.0-old"} 1.0' in render()[0].decode()
    finally:
        forget_process(old)
        forget_process(new)
