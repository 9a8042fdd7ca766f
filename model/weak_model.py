"""When a trained model is too weak to use: the checks training runs on the card it is about to write.

Each finding is one sentence in the card's ``warnings`` list; ``triage train`` prints them at the end and exits with
status 3 unless ``--allow-weak``. Too little data shows all of them at once: accuracy at chance, the temperature fit
pinned at its bound, no review threshold reaching the precision target, nothing routed automatically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from model.metrics import TEMPERATURE_BOUNDS, temperature_at_bound

CHANCE_MARGIN = 0.10  # accuracy less than this above chance is "near chance" (more on small splits, see below)
TINY_COVERAGE = 0.05  # routing fewer validation photos than this automatically sends nearly all to review


def chance_accuracy(report: Mapping[str, Any]) -> float:
    """The accuracy of always answering the largest class, from a ``classification_report``'s supports."""
    supports = [row["support"] for row in report["per_class"].values()]
    return max(supports) / max(sum(supports), 1)


def near_chance(report: Mapping[str, Any]) -> bool:
    """Accuracy below chance plus ``CHANCE_MARGIN``, or plus two binomial standard errors of chance on a split too
    small for the margin to mean anything."""
    chance = chance_accuracy(report)
    margin = max(CHANCE_MARGIN, 2 * math.sqrt(chance * (1 - chance) / max(report["n"], 1)))
    return report["accuracy"] < chance + margin


def weak_model_warnings(metrics: Mapping[str, Mapping[str, Any]], calibration: Mapping[str, Any]) -> list[str]:
    """The card's ``warnings``: ``metrics`` by split (``classification_report`` with ``routing``) and ``calibration``
    as training writes them (``temperature_fitted``, ``review_threshold``, ``threshold_reaches_target``,
    ``target_precision``). Empty for a usable model."""
    warnings = []
    for split in ("val", "test"):
        report = metrics.get(split)
        if report is not None and near_chance(report):
            warnings.append(
                f"{split} accuracy {report['accuracy']:.4f} is near chance ({chance_accuracy(report):.4f}, the largest "
                f"class's share of {report['n']} photos): the model has learnt next to nothing"
            )
    fitted = calibration["temperature_fitted"]
    if temperature_at_bound(fitted):
        low, high = TEMPERATURE_BOUNDS
        warnings.append(
            f"the fitted temperature {fitted:.4g} is pinned at a bound of its range ({low} to {high}): the validation "
            "logits say next to nothing about the class"
        )
    if not calibration["threshold_reaches_target"]:
        warnings.append(
            f"no review threshold makes the photos routed automatically {calibration['target_precision']:.0%} precise "
            f"on validation: the threshold is {calibration['review_threshold']:.4f}, and only photos the model is "
            "certain of are routed automatically"
        )
    coverage = metrics["val"]["routing"]["coverage"]
    if coverage < TINY_COVERAGE:
        warnings.append(
            f"only {coverage:.1%} of validation photos are routed automatically at the review threshold "
            f"{calibration['review_threshold']:.4f}: nearly every photo goes to needs_review"
        )
    return warnings


def warnings_banner(warnings: list[str]) -> str:
    """The card's ``warnings`` as the block training ends with, impossible to miss in a log."""
    rule = "!" * 100
    lines = [f"WARNING: {w}" for w in warnings]
    return "\n".join([rule, "THIS MODEL IS TOO WEAK TO USE (model_card.json lists the same warnings):", *lines, rule])
