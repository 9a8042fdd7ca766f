"""``bench/review_threshold.py``: the Wilson lower bound against the root of its defining quadratic, and the
bounded threshold rule at its edges."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from bench.review_threshold import bounded_threshold, wilson_lower


@pytest.mark.parametrize("correct, n", [(0, 10), (7, 10), (695, 700), (300, 300)])
def test_wilson_lower_is_the_lower_root_of_the_score_equation(correct: int, n: int) -> None:
    """The Wilson interval holds the p with (p_hat - p)^2 = z^2 p (1 - p) / n; its lower end is the smaller root."""
    z, p_hat = NormalDist().inv_cdf(0.95), correct / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    roots = np.roots([a, b, c]).real
    assert wilson_lower(correct, n, 0.95) == pytest.approx(roots.min(), abs=1e-12)
    assert wilson_lower(correct, n, 0.95) <= p_hat


def test_bounded_threshold_needs_enough_right_photos_above_it() -> None:
    conf = np.linspace(0.5, 1.0, 2001)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.zeros(len(conf), dtype=np.int64)
    labels[:200] = 1  # the 200 least confident photos are wrong
    t = bounded_threshold(probs, labels, 0.99, 0.95)

    def bound(threshold: float) -> float:
        routed = conf >= threshold
        return wilson_lower(int((labels[routed] == 0).sum()), int(routed.sum()), 0.95)

    assert 0.5 < t < 1.0 and bound(t) >= 0.99
    assert bound(conf[conf < t].max()) < 0.99  # the lowest such threshold
    assert bounded_threshold(probs[:50], labels[:50], 0.99, 0.95) > 1.0  # all wrong: nothing auto-routes
