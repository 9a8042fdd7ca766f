"""Abstention on the unfamiliar, the training side: fit ``model.familiarity`` on the trained network's features.

After the network is fitted, its global-pooled last-stage features (eval mode, no augmentation, the same
normalisation as serving) of up to ``FIT_PHOTOS`` training photos give the class means and the shared covariance;
the threshold is then set on the validation photos so that at most ``MAX_ABSTAIN`` of them are called unfamiliar.
A photo above it goes to ``needs_review`` with reason ``unfamiliar``, whatever its confidence; the review threshold
is fitted on the validation photos that were *not* abstained on, and every split's routing counts the abstained
photos as not auto-routed (``model.metrics.routing_report``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.config import Preprocessing
from model.data import ArrayDataset
from model.familiarity import Familiarity, fit_familiarity, pooled_features, with_threshold
from model.network import Network
from model.preprocess import normalize

FIT_PHOTOS = 3000  # training photos whose features fit the means and covariance (a seeded subset of larger splits)
MAX_ABSTAIN = 0.02  # at most this share of in-distribution validation photos is called unfamiliar
RANK = 32  # leading covariance directions kept (model.familiarity.fit_familiarity caps it for small splits)


def logits_and_features(
    net: Network, data: ArrayDataset, spec: Preprocessing, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Eval-time float64 logits ``(N, K)`` and pooled last-stage features ``(N, D)`` in one pass; inputs are
    normalised by ``model.preprocess.normalize``, as in serving."""
    net.eval()
    device = next(net.parameters()).device
    last = net.config.stage_names[-1]
    logits, features = [], []
    with torch.inference_mode():
        for i in range(0, len(data), batch):
            x = torch.from_numpy(normalize(data.pixels[i : i + batch], spec)).to(device)
            out, maps = net.forward_stages(x.contiguous(memory_format=torch.channels_last))
            logits.append(out.float().cpu().numpy())
            features.append(pooled_features(maps[last].float().cpu().numpy()))
    if not logits:
        raise ValueError(f"no photos in {data.source}")
    return np.concatenate(logits).astype(np.float64), np.concatenate(features)


def fitting_subset(n: int, seed: int, limit: int = FIT_PHOTOS) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` training photos, drawn without replacement with ``seed``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_abstention(
    net: Network, train: ArrayDataset, val_features: np.ndarray, spec: Preprocessing, seed: int
) -> tuple[Familiarity, int]:
    """The familiarity model fitted on (a subset of) ``train``'s features, its threshold set on ``val_features``
    ``(N, D)`` so that at most ``MAX_ABSTAIN`` of them abstain; also how many training photos it was fitted on."""
    chosen = fitting_subset(len(train), seed)
    subset = ArrayDataset(train.pixels[chosen], train.labels[chosen], f"{train.source} (familiarity subset)")
    _, features = logits_and_features(net, subset, spec)
    return with_threshold(fit_familiarity(features, subset.labels, RANK), val_features, MAX_ABSTAIN), len(chosen)


def familiarity_card(familiarity: Familiarity, fitted_photos: int, abstained: dict[str, np.ndarray]) -> dict[str, Any]:
    """The card's ``familiarity``: the threshold serving applies, how it was fitted, and the share of each evaluated
    split's photos (``abstained``: split -> ``(N,)`` bool) it calls unfamiliar."""
    return {
        **familiarity.summary(),
        "max_abstain": MAX_ABSTAIN,
        "fitted_on": {"means_and_covariance": f"train ({fitted_photos} photos)", "threshold": "val"},
        "abstain_rate": {name: float(flags.mean()) for name, flags in abstained.items()},
    }
