"""From logits to a route: temperature-scaled softmax, the review threshold, and the ticket-level decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.config import NEEDS_REVIEW
from model.metrics import softmax


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``(N, K)`` logits -> ``(N, K)`` probabilities of ``softmax(logits / temperature)`` (float64, rows sum to 1):
    the softmax training calibrated the model with."""
    return softmax(logits, temperature)


@dataclass(frozen=True)
class Decision:
    route: str
    confidence: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"route": self.route, "confidence": self.confidence, "probabilities": self.probabilities}


def decide(probs: np.ndarray, classes: Sequence[str], threshold: float) -> list[Decision]:
    """Route each row: the top class when its probability reaches ``threshold``, else ``needs_review``."""
    out = []
    for row in probs:
        top = int(np.argmax(row))
        confidence = float(row[top])
        route = classes[top] if confidence >= threshold else NEEDS_REVIEW
        out.append(Decision(route, confidence, {c: float(p) for c, p in zip(classes, row, strict=True)}))
    return out


def ticket_decision(decisions: Sequence[Decision], damage_class: str = "screen_damage") -> Decision | None:
    """One route for a ticket's photos.

    ``screen_damage`` if any photo is confidently damage (the refurbishment team must see it); else
    ``needs_review`` if any photo is unsure; else ``general_returns``. Confidence is that of the deciding photo;
    probabilities are those of the deciding photo. ``None`` when no photo could be read.
    """
    if not decisions:
        return None
    damaged = [d for d in decisions if d.route == damage_class]
    if damaged:
        return max(damaged, key=lambda d: d.confidence)
    unsure = [d for d in decisions if d.route == NEEDS_REVIEW]
    if unsure:
        return min(unsure, key=lambda d: d.confidence)
    return min(decisions, key=lambda d: d.confidence)
