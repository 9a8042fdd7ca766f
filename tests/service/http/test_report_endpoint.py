"""The training report is served only when it is the file the model card records."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.http.report import load_report


def _card(body: bytes, name: str = "report.html") -> dict:
    return {"report": {"file": name, "sha256": hashlib.sha256(body).hexdigest()}}


def test_a_report_matching_its_card_is_served(tmp_path: Path) -> None:
    (tmp_path / "report.html").write_bytes(b"<!doctype html><p>report")
    assert load_report(_card(b"<!doctype html><p>report"), tmp_path) == (b"<!doctype html><p>report", "")


def test_no_missing_or_changed_report_is_refused_with_the_reason(tmp_path: Path) -> None:
    assert load_report({}, tmp_path) == (None, "this model's card lists no training report")
    body, why = load_report(_card(b"x"), tmp_path)
    assert body is None and "cannot be read" in why
    (tmp_path / "report.html").write_bytes(b"edited after training")
    body, why = load_report(_card(b"as trained"), tmp_path)
    assert body is None and "does not match the sha256" in why


def test_the_report_is_read_only_from_beside_the_model(tmp_path: Path) -> None:
    (tmp_path / "secret.html").write_bytes(b"outside")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    body, why = load_report(_card(b"outside", name="../secret.html"), model_dir)
    assert body is None and "cannot be read" in why
