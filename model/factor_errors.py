"""Where a model errs on generated photos: its error rate by the value of each generator factor."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.config import CLASSES
from model.data import split_seeds
from model.synth import sample_factors

# Factors that identify the photo rather than describe it (numeric ones, such as JPEG quality, are left out too).
SKIPPED = {"label", "split", "width", "height", "held_out"}


@dataclass(frozen=True)
class Row:
    label: str
    factor: str
    value: str
    errors: int
    count: int

    @property
    def rate(self) -> float:
        return self.errors / self.count


def split_factors(split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The factors the generator draws for each photo of ``split`` (labels alternate as in ``synthetic_split``)."""
    seeds = split_seeds(split, n, seed)
    return [sample_factors(int(s), CLASSES[i % len(CLASSES)], split) for i, s in enumerate(seeds)]


def error_rates(factors: list[dict[str, Any]], labels: np.ndarray, wrong: np.ndarray, min_count: int) -> list[Row]:
    """Error rate per (class, factor, value), for values drawn at least ``min_count`` times; worst first."""
    if not len(factors) == len(labels) == len(wrong):
        raise ValueError(f"{len(factors)} factor dicts, {len(labels)} labels and {len(wrong)} outcomes must match")
    tally: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for photo, label, miss in zip(factors, labels, wrong, strict=True):
        for name, value in photo.items():
            if name in SKIPPED or not isinstance(value, (str, bool)):  # categorical factors only
                continue
            cell = tally[(int(label), name, str(value))]
            cell[0] += int(miss)
            cell[1] += 1
    rows = [Row(CLASSES[k[0]], k[1], k[2], e, c) for k, (e, c) in tally.items() if c >= min_count]
    return sorted(rows, key=lambda r: (-r.rate, -r.count, r.factor, r.value))
