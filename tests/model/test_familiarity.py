"""Familiarity distances against the full-covariance Mahalanobis distance they stand for, and the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from model.familiarity import fit_familiarity, pooled_features, with_threshold


def _two_classes(rng: np.random.Generator, n: int = 400, dim: int = 12) -> tuple[np.ndarray, np.ndarray]:
    mixing = rng.normal(size=(dim, dim)) * np.linspace(2.0, 0.1, dim)  # anisotropic, correlated features
    labels = rng.integers(0, 2, size=n)
    offsets = np.stack([np.zeros(dim), np.full(dim, 3.0)])
    return rng.normal(size=(n, dim)) @ mixing.T + offsets[labels], labels


def test_distances_equal_the_mahalanobis_distance_under_the_probabilistic_pca_covariance() -> None:
    rng = np.random.default_rng(0)
    features, labels = _two_classes(rng)
    model = fit_familiarity(features, labels, rank=4)
    # The covariance the model stands for, built independently: top-4 eigenpairs of the pooled within-class
    # covariance, the rest replaced by their mean.
    means = np.stack([features[labels == k].mean(0) for k in (0, 1)])
    centred = features - means[labels]
    cov = centred.T @ centred / (len(features) - 2)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    sigma2 = values[4:].mean()
    model_cov = (vectors[:, :4] * values[:4]) @ vectors[:, :4].T + sigma2 * (
        np.eye(12) - vectors[:, :4] @ vectors[:, :4].T
    )
    precision = np.linalg.inv(model_cov)
    probe = rng.normal(size=(50, 12)) * 3
    expected = np.min([np.einsum("nd,de,ne->n", probe - m, precision, probe - m) for m in means], axis=0)
    np.testing.assert_allclose(model.distances(probe), expected, rtol=1e-9)


def test_threshold_lets_at_most_the_allowed_share_of_validation_photos_abstain() -> None:
    rng = np.random.default_rng(1)
    features, labels = _two_classes(rng, n=1000)
    val, _ = _two_classes(np.random.default_rng(2), n=537)
    model = with_threshold(fit_familiarity(features, labels), val, max_abstain=0.02)
    abstained = model.unfamiliar(val).sum()
    assert abstained <= int(0.02 * 537)
    assert abstained >= int(0.02 * 537) - 1  # the smallest such threshold, not a needlessly loose one
    with pytest.raises(ValueError, match="max_abstain"):
        with_threshold(model, val, max_abstain=1.0)


def test_photos_off_the_training_manifold_are_unfamiliar_even_along_directions_training_never_varied() -> None:
    rng = np.random.default_rng(3)
    dim = 20
    # Training photos vary only in the first 5 dimensions; the rest are nearly constant.
    features = np.concatenate([rng.normal(size=(600, 5)) * 4, rng.normal(size=(600, dim - 5)) * 0.01], axis=1)
    labels = rng.integers(0, 2, size=600)
    val = np.concatenate([rng.normal(size=(300, 5)) * 4, rng.normal(size=(300, dim - 5)) * 0.01], axis=1)
    model = with_threshold(fit_familiarity(features, labels, rank=5), val)
    odd = val[:10].copy()
    odd[:, 12] += 1.0  # small in absolute terms, far outside what training saw along this direction
    assert model.unfamiliar(odd).all()
    assert model.unfamiliar(val).mean() <= 0.02


def test_shapes_are_checked_and_named() -> None:
    rng = np.random.default_rng(4)
    features, labels = _two_classes(rng)
    model = fit_familiarity(features, labels)
    with pytest.raises(ValueError, match=r"\(N, 12\).*\(3, 5\)"):
        model.distances(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="too few photos"):
        fit_familiarity(features[:3], labels[:3])
    assert pooled_features(np.ones((2, 7, 3, 4))).shape == (2, 7)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        pooled_features(np.ones((2, 7)))
