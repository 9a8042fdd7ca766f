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


UNSURE = "unsure"  # needs_review: the calibrated confidence is below the review threshold
UNFAMILIAR = "unfamiliar"  # needs_review: the photo lies far from every photo the model was trained on
REVIEW_REASONS = (UNSURE, UNFAMILIAR)


@dataclass(frozen=True)
class Decision:
    route: str
    confidence: float
    probabilities: dict[str, float]
    reason: str | None = None  # why a photo needs review (REVIEW_REASONS); None when it was routed

    def to_dict(self) -> dict[str, object]:
        answer: dict[str, object] = {"route": self.route, "confidence": self.confidence}
        answer["probabilities"] = self.probabilities
        if self.reason is not None:
            answer["reason"] = self.reason
        return answer


def decide(
    probs: np.ndarray, classes: Sequence[str], threshold: float, unfamiliar: Sequence[bool] | None = None
) -> list[Decision]:
    """Route each row: ``needs_review`` (reason ``unfamiliar``) where ``unfamiliar`` marks it, else the top class
    when its probability reaches ``threshold``, else ``needs_review`` (reason ``unsure``)."""
    if unfamiliar is None:
        unfamiliar = [False] * len(probs)
    if len(unfamiliar) != len(probs):
        raise ValueError(f"{len(probs)} probability rows but {len(unfamiliar)} familiarity flags")
    out = []
    for row, odd in zip(probs, unfamiliar, strict=True):
        top = int(np.argmax(row))
        confidence = float(row[top])
        probabilities = {c: float(p) for c, p in zip(classes, row, strict=True)}
        if odd:
            out.append(Decision(NEEDS_REVIEW, confidence, probabilities, UNFAMILIAR))
        elif confidence >= threshold:
            out.append(Decision(classes[top], confidence, probabilities))
        else:
            out.append(Decision(NEEDS_REVIEW, confidence, probabilities, UNSURE))
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
