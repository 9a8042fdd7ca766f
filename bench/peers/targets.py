"""The targets ``triage serve`` is held to against TorchServe (stock and tuned) in bench/peer_servers.py.

* 4032x3024 phone photos: >= 4x stock and >= 1.2x tuned TorchServe's photos/s, each the best over the concurrency
  levels measured;
* 640x480 photos: more photos/s than both (best over the levels);
* a lower p99 than both at every concurrency level, for both photo sizes;
* less memory: peak RSS summed over all of a server's processes (the issue's measure, which counts shared pages once
  per process), and peak PSS summed likewise (each shared page split between its sharers);
* a faster start: from launching the server to its first good answer to a real photo request.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIZES = ("4032x3024", "640x480")  # phone, small: bench/service_load.py's SIZES
PEERS = ("ts-stock", "ts-tuned")
MIB = 2**20


def p99_ms(latencies: list[float]) -> float:
    """The 99th percentile of ``latencies`` (seconds) in milliseconds; infinite when nothing was answered within the
    window (a server that answers nothing has no bound on its latency, which loses every comparison)."""
    return 1e3 * float(np.percentile(latencies, 99)) if latencies else math.inf


@dataclass(frozen=True)
class Figures:
    """What the targets compare: photos/s and p99 ms by (photo size, concurrency), peak summed RSS and PSS in bytes,
    start seconds."""

    rate: dict[tuple[str, int], float]
    p99: dict[tuple[str, int], float]
    peak_rss: int
    start_s: float
    peak_pss: int = 0

    def best(self, size: str) -> float:
        return max((r for (s, _), r in self.rate.items() if s == size), default=0.0)


def targets(ours: Figures, peers: dict[str, Figures | str], levels: list[int]) -> list[list[str]]:
    """Rows [target, triage, ts-stock, ts-tuned, result]; ``peers`` holds each peer's figures or why it has none."""
    phone, small = SIZES
    checks: list[tuple[str, Callable[[Figures], float], str, tuple[str, ...], Callable[[float, float], bool]]] = [
        (f"{phone} photos/s >= 4x ts-stock", lambda f: f.best(phone), "{:.1f}", PEERS[:1], lambda a, b: a >= 4 * b),
        (f"{phone} photos/s >= 1.2x ts-tuned", lambda f: f.best(phone), "{:.1f}", PEERS[1:], lambda a, b: a >= 1.2 * b),
        (f"{small} photos/s above both", lambda f: f.best(small), "{:.1f}", PEERS, operator.gt),
        *[
            (f"{s} p99 ms below both, concurrency {c}", lambda f, k=(s, c): f.p99[k], "{:.1f}", PEERS, operator.lt)
            for s, c in itertools.product(SIZES, levels)
        ],
        ("peak RSS MiB, summed, below both", lambda f: f.peak_rss / MIB, "{:.0f}", PEERS, operator.lt),
        ("peak PSS MiB, summed, below both", lambda f: f.peak_pss / MIB, "{:.0f}", PEERS, operator.lt),
        ("launch to first answer s, below both", lambda f: f.start_s, "{:.2f}", PEERS, operator.lt),
    ]
    rows = []
    for label, pick, fmt, against, wins in checks:
        mine, got = pick(ours), {p: pick(f) for p, f in peers.items() if isinstance(f, Figures)}
        if missing := [f"{p}: {peers.get(p, 'not run')}" for p in against if p not in got]:
            result = f"not measured ({'; '.join(missing)})"
        else:
            result = "met" if all(wins(mine, got[p]) for p in against) else "missed"
            if "photos/s" in label:
                result += " (" + ", ".join(f"{mine / got[p]:.2f}x" if got[p] else "-" for p in against) + ")"
        rows.append([label, fmt.format(mine), *(fmt.format(got[p]) if p in got else "-" for p in PEERS), result])
    return rows
