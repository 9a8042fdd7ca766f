"""Routing: calibrated probabilities, the review threshold and the ticket-level decision."""

from __future__ import annotations

import numpy as np
import pytest

from model.config import CLASSES
from service.inference.routing import Decision, calibrated_probabilities, decide, ticket_decision


def test_probabilities_sum_to_one_and_temperature_softens() -> None:
    logits = np.array([[4.0, 0.0], [0.0, 0.0], [-1.0, 2.0]], dtype=np.float32)
    sharp = calibrated_probabilities(logits, 1.0)
    soft = calibrated_probabilities(logits, 2.0)
    np.testing.assert_allclose(sharp.sum(1), 1.0)
    assert sharp[0, 0] == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert soft[0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_probabilities_validate_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(2,\)"):
        calibrated_probabilities(np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        calibrated_probabilities(np.zeros((1, 2)), 0.0)


def test_below_threshold_goes_to_review() -> None:
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.1, 0.9]])
    routes = [d.route for d in decide(probs, CLASSES, threshold=0.8)]
    assert routes == ["screen_damage", "needs_review", "general_returns"]


def _d(route: str, conf: float) -> Decision:
    return Decision(route, conf, {})


def test_ticket_route_prefers_confident_damage_then_review() -> None:
    assert ticket_decision([_d("general_returns", 0.99), _d("screen_damage", 0.9)]).route == "screen_damage"
    assert ticket_decision([_d("general_returns", 0.99), _d("needs_review", 0.6)]).route == "needs_review"
    only_returns = ticket_decision([_d("general_returns", 0.99), _d("general_returns", 0.93)])
    assert only_returns.route == "general_returns" and only_returns.confidence == 0.93
    assert ticket_decision([]) is None


def test_an_unfamiliar_photo_goes_to_review_however_confident_and_says_why() -> None:
    probs = np.array([[0.999, 0.001], [0.999, 0.001], [0.6, 0.4]])
    confident, unfamiliar, unsure = decide(probs, CLASSES, 0.9, unfamiliar=[False, True, False])
    assert (confident.route, confident.reason) == ("screen_damage", None)
    assert (unfamiliar.route, unfamiliar.reason) == ("needs_review", "unfamiliar")
    assert unfamiliar.confidence == pytest.approx(0.999)  # the model's view is still reported
    assert (unsure.route, unsure.reason) == ("needs_review", "unsure")
    assert "reason" not in confident.to_dict() and unfamiliar.to_dict()["reason"] == "unfamiliar"
    assert ticket_decision([confident, unfamiliar]).route == "screen_damage"  # damage still reaches the team
    assert ticket_decision([unfamiliar, decide(probs[2:] * 0 + [0.05, 0.95], CLASSES, 0.9)[0]]).reason == "unfamiliar"
    with pytest.raises(ValueError, match="3 probability rows but 2"):
        decide(probs, CLASSES, 0.9, unfamiliar=[True, False])
