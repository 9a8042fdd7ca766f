"""Metrics across processes: a dead worker's model gauge leaves with it, its counters stay in the totals; the
metrics folders of killed services are swept."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

from service.metrics import forget_process, live_models, metrics, render

ROOT = Path(__file__).resolve().parents[2]


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


def test_metrics_folders_of_killed_services_are_swept_and_no_other(tmp_path: Path, dead_pid: int) -> None:
    from service.metrics import METRICS_DIR_PREFIX, sweep_orphan_metrics_dirs

    alive = os.getpid()
    for name in (f"{METRICS_DIR_PREFIX}{dead_pid}-a1", f"{METRICS_DIR_PREFIX}{alive}-b2", f"{METRICS_DIR_PREFIX}c3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "counter_1.db").write_bytes(b"\0" * 8)
    (tmp_path / f"{METRICS_DIR_PREFIX}{dead_pid}-file").write_text("not a folder")
    assert sweep_orphan_metrics_dirs(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{METRICS_DIR_PREFIX}{alive}-b2", f"{METRICS_DIR_PREFIX}c3", f"{METRICS_DIR_PREFIX}{dead_pid}-file"]
    )


def test_a_service_without_a_metrics_folder_makes_one_named_after_it_and_sweeps_the_dead(
    tmp_path: Path, dead_pid: int
) -> None:
    from service.metrics import METRICS_DIR_PREFIX, MULTIPROC_ENV

    left = tmp_path / f"{METRICS_DIR_PREFIX}{dead_pid}-old"
    left.mkdir()
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV} | {"TMPDIR": str(tmp_path)}
    code = "import os; from service.metrics import use_metrics_dir; d, c = use_metrics_dir(); print(os.getpid(), d, c)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    pid, made, created = out.stdout.split()
    assert created == "True" and Path(made).parent == tmp_path
    assert Path(made).name.startswith(f"{METRICS_DIR_PREFIX}{pid}-")
    assert not left.exists()
