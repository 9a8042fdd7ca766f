"""``make test`` runs every check (ruff check, ruff format --check, pytest, triage parity) even after one has failed,
then fails listing each check's result. The checks are stand-ins here (the Makefile's RUFF, PYTEST and TRIAGE), so
that nothing real runs twice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stand_in(path: Path, status: int) -> Path:
    """A command that records its arguments in ``ran.log`` beside it and exits with ``status``."""
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >> "{path.parent}/ran.log"\nexit {status}\n')
    path.chmod(0o755)
    return path


def make_test(tmp_path: Path, ruff: int, pytest: int, triage: int) -> tuple[subprocess.CompletedProcess[str], str]:
    tools = {name: stand_in(tmp_path / name, status) for name, status in (("ruff", ruff), ("pytest", pytest))}
    tools["triage"] = stand_in(tmp_path / "triage", triage)
    argv = ["make", "--no-print-directory", "-o", ".venv/dev.stamp", "test"]  # -o: install nothing
    argv += [f"{name.upper()}={path}" for name, path in tools.items()]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # not the outer make's
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return done, (tmp_path / "ran.log").read_text()


def test_a_failing_pytest_still_lets_parity_run_and_fails_the_run(tmp_path: Path) -> None:
    done, ran = make_test(tmp_path, ruff=0, pytest=1, triage=0)
    assert ran.splitlines() == ["ruff check .", "ruff format --check .", "pytest -q", "triage parity"]
    assert done.returncode != 0
    summary = done.stdout[done.stdout.index("make test:") :].splitlines()[1:]
    assert [line.strip() for line in summary] == [
        "ruff check: passed",
        "ruff format: passed",
        "pytest: FAILED (exit status 1)",
        "triage parity: passed",
    ], done.stdout


def test_every_check_failing_is_each_listed(tmp_path: Path) -> None:
    done, ran = make_test(tmp_path, ruff=1, pytest=2, triage=3)
    assert len(ran.splitlines()) == 4
    assert done.returncode != 0
    failed = ["ruff check: FAILED (exit status 1)", "pytest: FAILED (exit status 2)", "parity: FAILED (exit status 3)"]
    assert all(line in done.stdout for line in failed), done.stdout


def test_all_checks_passing_pass(tmp_path: Path) -> None:
    done, ran = make_test(tmp_path, ruff=0, pytest=0, triage=0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(ran.splitlines()) == 4 and done.stdout.count(": passed") == 4
