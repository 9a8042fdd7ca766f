"""``report.html``: the training report as one self-contained page (images inline, no script, no network)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from model.card import CARD_NAME, read_card, sha256_file, write_card
from model.config import CLASSES, NEEDS_REVIEW
from model.data import ArrayDataset
from model.factor_errors import error_rates
from model.metrics import classification_report, review_threshold, routing_report, softmax
from model.report import charts
from model.report.evaluation import Predictor, SplitPredictions, evaluate

REPORT_NAME = "report.html"
GALLERY_SIZE = 8
PRECISION_TARGETS = (0.95, 0.98, 0.99, 0.995)
FACTOR_ROWS = 12
CAPTION_FACTORS = 5  # generator factors under a gallery photo; the rest in its tooltip
FACTOR_MIN_COUNT = 20
# Nothing may be fetched: images are data: URIs and the page has no script.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } .warn { background: #fdecea; padding: 0.6em 1em; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; } figure { margin: 0; width: 170px; font-size: 12px; }
figure img { border: 1px solid #999; } .muted { color: #666; font-size: 13px; } img { max-width: 100%; }
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td class="n">{v:.4f}</td>'
        return f'<td class="n">{v}</td>' if isinstance(v, int) else f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _describe(description: dict[str, Any]) -> tuple[str, str]:
    """A photo's caption line and its full description (a tooltip): its file, or its generator factors."""
    if "file" in description:
        return str(description["file"]), str(description["file"])
    shown = [f"{k}={v}" for k, v in description.items() if isinstance(v, (str, bool)) and k not in ("label", "split")]
    return ", ".join(shown[:CAPTION_FACTORS]), ", ".join(shown)


def _gallery(
    split: SplitPredictions, probs: np.ndarray, idx: np.ndarray, threshold: float, predictor: Predictor
) -> str:
    if not len(idx):
        return '<p class="muted">none</p>'
    pred = probs.argmax(axis=1)
    cams = predictor.cams(split.pixels[idx], pred[idx])
    figures = []
    for cam, i in zip(cams, idx, strict=True):
        conf = float(probs[i].max())
        route = CLASSES[pred[i]] if conf >= threshold else NEEDS_REVIEW
        line, full = _describe(split.descriptions[i]) if i < len(split.descriptions) else ("", "")
        caption = (
            f"<b>{route}</b> ({CLASSES[pred[i]]} {conf:.1%})<br>true: {CLASSES[split.labels[i]]}"
            f"<br><span class='muted' title='{html.escape(full)}'>#{i} {html.escape(line)}</span>"
        )
        picture = _img(charts.overlay(split.pixels[i], cam), f"photo {i}")
        figures.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _split_section(split: SplitPredictions, card: dict[str, Any], predictor: Predictor) -> tuple[str, dict[str, Any]]:
    calibration = card["calibration"]
    temperature, threshold = float(calibration["temperature"]), float(calibration["review_threshold"])
    raw, probs = softmax(split.logits), softmax(split.logits, temperature)
    report = classification_report(probs, split.labels, CLASSES)
    routing = routing_report(probs, split.labels, threshold)
    numbers = {
        "n": report["n"],
        "accuracy": report["accuracy"],
        "ece": report["ece"],
        "ece_uncalibrated": classification_report(raw, split.labels, CLASSES)["ece"],
        "per_class": report["per_class"],
        "confusion": report["confusion"],
        "routing": routing,
    }
    name = split.name
    per_class = [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in report["per_class"].items()]
    targets = []
    for target in PRECISION_TARGETS:
        t = review_threshold(probs, split.labels, target)
        at = routing_report(probs, split.labels, t)
        targets.append([f"{target:.1%}", t if t <= 1 else "none reaches it", at["coverage"], 1 - at["coverage"]])
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != split.labels)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:GALLERY_SIZE]
    nearest = np.argsort(np.abs(conf - threshold), kind="stable")[:GALLERY_SIZE]
    parts = [
        f'<section class="split" id="split-{name}"><h2>{html.escape(name)}: {report["n"]} photos</h2>',
        _table(
            ["accuracy", "ECE", "ECE uncalibrated", "auto-routed", "precision of auto-routed", "to a person"],
            [
                [
                    numbers["accuracy"],
                    numbers["ece"],
                    numbers["ece_uncalibrated"],
                    routing["coverage"],
                    routing["auto_routed_precision"],
                    routing["needs_review"],
                ]
            ],
        ),
        f'<h3 id="{name}-confusion">Confusion and per-class scores</h3>',
        _img(charts.confusion_matrix(report["confusion"], CLASSES), f"{name} confusion matrix"),
        _table(["class", "precision", "recall", "F1", "photos"], per_class),
        f'<h3 id="{name}-reliability">Reliability before and after calibration</h3>',
        _img(charts.reliability(raw, probs, split.labels, temperature), f"{name} reliability diagram"),
        f'<h3 id="{name}-coverage">Coverage and precision of the review threshold</h3>',
        _img(
            charts.coverage_curve(probs, split.labels, threshold, float(calibration["target_precision"])),
            f"{name} coverage against precision",
        ),
        _table(["precision of auto-routed", "lowest threshold", "auto-routed", "to a person"], targets),
        f'<h3 id="{name}-wrong">Most confidently wrong</h3>',
        _gallery(split, probs, worst, threshold, predictor),
        f'<h3 id="{name}-threshold">Nearest the review threshold ({threshold:.3f})</h3>',
        _gallery(split, probs, nearest, threshold, predictor),
    ]
    generated = [d for d in split.descriptions if "file" not in d]
    if len(generated) == len(split.labels):
        rows = error_rates(generated, split.labels, pred != split.labels, FACTOR_MIN_COUNT)[:FACTOR_ROWS]
        parts += [
            f'<h3 id="{name}-factors">Error rate by generator factor</h3>',
            _img(
                charts.factor_errors(rows, f"{name}: worst factor values (drawn >= {FACTOR_MIN_COUNT} times)"),
                f"{name} errors by factor",
            )
            if rows
            else '<p class="muted">no factor value drawn often enough</p>',
        ]
    return "".join(parts) + "</section>", numbers


def render(card: dict[str, Any], splits: list[SplitPredictions], predictor: Predictor) -> str:
    """The page's HTML for a model card and its splits' predictions."""
    training = card["training"]
    title = f"Training report: {card['name']} {card['version']}"
    warnings = card.get("warnings") or []
    summary = [
        ["network", card.get("network", {}).get("network", "scratch")],
        ["parameters", card.get("parameters", "?")],
        ["training data", training["data"].get("kind", "?")],
        ["photos per split", json.dumps(training["data"].get("counts", {}))],
        ["epochs run / kept", f"{training.get('epochs_run', '?')} / {training.get('best_epoch', '?')}"],
        ["training time", f"{training.get('seconds_total', 0) / 60:.1f} min on {training.get('device', '?')}"],
        ["temperature", card["calibration"]["temperature"]],
        ["review threshold", card["calibration"]["review_threshold"]],
    ]
    sections, data = [], {"name": card["name"], "version": card["version"], "splits": {}}
    for split in splits:
        section, numbers = _split_section(split, card, predictor)
        sections.append(section)
        data["splits"][split.name] = numbers
    warning_html = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warnings)
    curves = charts.learning_curves(training["history"], int(training["best_epoch"]))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{warning_html}"
        f'<section id="summary"><h2>Summary</h2>{_table(["", ""], summary)}</section>'
        f'<section id="learning-curves"><h2>Learning curves</h2>{_img(curves, "learning curves")}</section>'
        + "".join(sections)
        + f'<script type="application/json" id="report-data">{html.escape(json.dumps(data), quote=False)}</script>'
        + "</body></html>"
    )


def write_report(model_dir: Path, splits: dict[str, ArrayDataset] | None = None) -> Path:
    """Write ``model_dir/report.html`` for the model there and record it (file and sha256) in its card."""
    card = read_card(model_dir / CARD_NAME)
    predictor = Predictor(model_dir)
    page = render(card, evaluate(predictor, card, splits), predictor)
    path = model_dir / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    card["report"] = {"file": REPORT_NAME, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    write_card(model_dir / CARD_NAME, card)
    return path
