"""Familiarity: how far a photo's features lie from the photos the model was trained on.

A photo unlike anything in training (a motorcycle in a garage, a star field) can still get a confident softmax.
Its *features* give it away: the network's global-pooled last-stage map ``(N, D)`` lands far from where the
training photos of either class landed. The distance is a class-conditional Gaussian distance with a shared,
low-rank-plus-isotropic covariance (probabilistic PCA):

    d(f) = min_k  sum_r (v_r . (f - mu_k))^2 / lambda_r  +  |(f - mu_k) - sum_r (v_r . (f - mu_k)) v_r|^2 / sigma^2

``mu_k`` are the class means, ``v_r`` / ``lambda_r`` the ``R`` leading eigenvectors / eigenvalues of the pooled
within-class covariance, and ``sigma^2`` the mean of the remaining eigenvalues, so directions the training photos
never varied along still count (a plain top-R Mahalanobis distance would ignore them). Written as

    d(f) = min_k  sum_r w_r (v_r . (f - mu_k))^2  +  |f - mu_k|^2 / sigma^2,   w_r = 1 / lambda_r - 1 / sigma^2

it is a few matrix products, which the exported ONNX graph computes beside the logits. The threshold is fitted on
validation photos so that at most ``max_abstain`` of them are called unfamiliar.

Pure NumPy: training fits it, the NumPy engine checks the exported graph's distances against ``distances``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

UNFAMILIARITY_NAME = "unfamiliarity"  # the ONNX output holding d(f) per photo, shape (N,)


@dataclass(frozen=True)
class Familiarity:
    """Fitted parameters: ``means (K, D)``, ``components (R, D)`` orthonormal rows, ``weights (R,)`` and
    ``inv_residual`` (``1 / sigma^2``); ``threshold`` is the distance above which a photo is unfamiliar."""

    means: np.ndarray
    components: np.ndarray
    weights: np.ndarray
    inv_residual: float
    threshold: float = np.inf

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``(N, D)`` pooled features -> ``(N,)`` float64 distances to the nearest class."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.means.shape[1]:
            raise ValueError(f"features must be (N, {self.means.shape[1]}), got shape {features.shape}")
        centred = features[None, :, :] - self.means[:, None, :]  # (K, N, D)
        along = centred @ self.components.T  # (K, N, R)
        d = (along**2) @ self.weights + self.inv_residual * (centred**2).sum(axis=2)  # (K, N)
        return d.min(axis=0)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the photos whose distance exceeds the fitted threshold."""
        return self.distances(features) > self.threshold

    def summary(self) -> dict[str, Any]:
        """What the model card records (the parameters themselves travel inside the ONNX graph)."""
        return {
            "feature_dim": int(self.means.shape[1]),
            "components": int(self.components.shape[0]),
            "threshold": float(self.threshold),
        }


def pooled_features(last_map: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` last-stage map -> ``(N, C)`` float64 global average: what the linear head sees."""
    if last_map.ndim != 4:
        raise ValueError(f"last-stage map must be (N, C, H, W), got shape {last_map.shape}")
    return last_map.astype(np.float64).mean(axis=(2, 3))


def fit_familiarity(features: np.ndarray, labels: np.ndarray, rank: int = 32) -> Familiarity:
    """Fit class means and the shared low-rank-plus-isotropic covariance on in-distribution ``(N, D)`` features.

    ``rank`` is capped at ``D - 1`` and at the number of photos less the number of classes, so that at least one
    eigenvalue is left for ``sigma^2``. The threshold is left infinite: ``with_threshold`` sets it.
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"need features (N, D) and labels (N,), got {features.shape} and {labels.shape}")
    classes = np.unique(labels)
    n, dim = features.shape
    rank = min(rank, dim - 1, n - len(classes) - 1)
    if rank < 1:
        raise ValueError(f"too few photos ({n}) or dimensions ({dim}) to fit a covariance")
    means = np.stack([features[labels == k].mean(axis=0) for k in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    # Eigen-decomposition through the SVD of the centred data: covariance = V diag(s^2 / (n - K)) V^T.
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    eigenvalues = singular**2 / (n - len(classes))
    rest = np.concatenate([eigenvalues[rank:], np.zeros(dim - len(eigenvalues))])  # unseen directions have 0
    floor = 1e-6 * max(eigenvalues[0], 1e-12)
    sigma2 = max(float(rest.mean()), floor)
    top = np.maximum(eigenvalues[:rank], sigma2)
    return Familiarity(
        means=means,
        components=vt[:rank],
        weights=1.0 / top - 1.0 / sigma2,
        inv_residual=1.0 / sigma2,
    )


def with_threshold(model: Familiarity, features: np.ndarray, max_abstain: float = 0.02) -> Familiarity:
    """The same model with the smallest threshold at which at most ``max_abstain`` of ``features`` (in-distribution
    validation photos, not the ones it was fitted on) are unfamiliar."""
    if not 0 <= max_abstain < 1:
        raise ValueError(f"max_abstain must be in [0, 1), got {max_abstain}")
    d = np.sort(model.distances(features))
    allowed = int(np.floor(max_abstain * len(d)))  # photos that may lie above the threshold
    threshold = float(d[len(d) - 1 - allowed])
    return Familiarity(model.means, model.components, model.weights, model.inv_residual, threshold)
