"""Glass fracture patterns as polylines in screen-plane millimetres (drawing them is :mod:`model.synth.damage`).

Styles: ``spiderweb`` (radial rays from an impact point joined by jittered rings), ``branching`` (long
random-walk cracks that fork), ``corner_shatter`` (dense short fragments around a corner) and the held-out
``double_impact`` (two small webs joined by a crack). :func:`branching_walk` is also used for marble veins,
so the crack-like negatives share the exact same line statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.synth.geometry import ellipse

Bounds = tuple[float, float, float, float]
Walk = tuple[np.ndarray, int]  # polyline (N, 2) and level: 0 main, 1 secondary, 2 fine

EXTENT_RADIUS = {"small": (0.12, 0.22), "medium": (0.22, 0.4), "large": (0.4, 0.65)}  # x screen diagonal


@dataclass
class CrackPattern:
    """A fracture in screen-plane coordinates (mm, origin at the screen's top-left corner)."""

    walks: list[Walk] = field(default_factory=list)
    shards: list[np.ndarray] = field(default_factory=list)
    impacts: list[np.ndarray] = field(default_factory=list)


def walks(
    rng: np.random.Generator,
    starts: np.ndarray,
    angles: np.ndarray,
    lengths: np.ndarray,
    step: float,
    bounds: Bounds,
    wiggle: float,
) -> list[np.ndarray]:
    """A batch of crack-like random walks: nearly straight runs with small kinks, each cut at ``bounds``.

    Walk ``i`` starts at ``starts[i]`` heading ``angles[i]`` for about ``lengths[i]`` mm. Every walk has at
    least two points.
    """
    starts = np.asarray(starts, dtype=float).reshape(-1, 2)
    k = len(starts)
    counts = np.maximum(1, np.ceil(np.asarray(lengths, dtype=float) / step).astype(int))
    n = int(counts.max())
    turns = rng.normal(0.0, wiggle, (k, n))
    turns[rng.random((k, n)) < 0.08] *= 4.0
    heading = np.asarray(angles, dtype=float)[:, None] + np.cumsum(turns, 1) * 0.7
    steps = step * rng.uniform(0.5, 1.5, (k, n))
    moves = np.stack([np.cos(heading), np.sin(heading)], -1) * steps[..., None]
    pts = np.concatenate([starts[:, None], starts[:, None] + np.cumsum(moves, 1)], 1)
    inside = (
        (pts[..., 0] >= bounds[0])
        & (pts[..., 0] <= bounds[2])
        & (pts[..., 1] >= bounds[1])
        & (pts[..., 1] <= bounds[3])
    )
    first_out = np.where(inside.all(1), n + 1, np.argmin(inside, 1))
    out = []
    for i in range(k):
        stop = min(int(counts[i]) + 1, int(first_out[i]))
        row = pts[i, : max(stop, 1)]
        if first_out[i] <= counts[i]:
            row = np.vstack([row, np.clip(pts[i, first_out[i]], bounds[:2], bounds[2:])])
        out.append(row)
    return out


def branching_walk(
    rng: np.random.Generator,
    starts: np.ndarray,
    angles: np.ndarray,
    lengths: np.ndarray,
    step: float,
    bounds: Bounds,
    *,
    wiggle: float = 0.08,
    branch_p: float = 0.08,
    depth: int = 2,
    level: int = 0,
) -> list[Walk]:
    """Walks that fork: at each vertex a branch starts with probability ``branch_p``, up to ``depth`` deep.

    The first ``len(starts)`` results are the main walks, in order.
    """
    mains = walks(rng, starts, angles, lengths, step, bounds, wiggle)
    out: list[Walk] = [(w, min(level, 2)) for w in mains]
    if depth <= 0:
        return out
    b_starts, b_angles, b_lengths = [], [], []
    for w, length in zip(mains, np.broadcast_to(lengths, len(mains)).tolist(), strict=True):
        if len(w) < 3:
            continue
        idx = np.nonzero(rng.random(len(w) - 2) < branch_p)[0][:6] + 1
        if not len(idx):
            continue
        d = w[idx + 1] - w[idx]
        turn = rng.uniform(0.35, 1.1, len(idx)) * rng.choice([-1.0, 1.0], len(idx))
        b_starts.append(w[idx])
        b_angles.append(np.arctan2(d[:, 1], d[:, 0]) + turn)
        b_lengths.append(length * (1 - idx / len(w)) * rng.uniform(0.2, 0.6, len(idx)))
    if b_starts:
        out += branching_walk(
            rng, np.concatenate(b_starts), np.concatenate(b_angles), np.concatenate(b_lengths), step, bounds,
            wiggle=wiggle, branch_p=branch_p * 0.6, depth=depth - 1, level=level + 1,
        )  # fmt: skip
    return out


def _point_at(ray: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray | None:
    far = np.nonzero(np.hypot(*(ray - centre).T) >= radius)[0]
    return ray[far[0]] if len(far) else None


def _spiderweb(
    rng: np.random.Generator, c: np.ndarray, radius: float, bounds: Bounds, step: float, rings: int
) -> list[Walk]:
    n = int(rng.integers(7, 17))
    angles = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
    out = branching_walk(
        rng,
        np.tile(c, (n, 1)),
        angles,
        radius * rng.uniform(0.45, 1.2, n),
        step,
        bounds,
        wiggle=0.05,
        branch_p=0.04,
        depth=1,
    )
    rays = [w for w, _ in out[:n]]
    for r in np.sort(rng.uniform(0.1, 0.8, rings)) * radius:
        for i in range(n):
            if rng.random() > 0.78:
                continue
            p = _point_at(rays[i], c, r * rng.uniform(0.85, 1.15))
            q = _point_at(rays[(i + 1) % n], c, r * rng.uniform(0.85, 1.15))
            if p is None or q is None:
                continue
            d = q - p
            mid = (p + q) / 2 + np.array([-d[1], d[0]]) * rng.uniform(-0.25, 0.25)
            out.append((np.array([p, mid, q]), 1))
    m = int(rng.integers(6, 16))
    crush = c + rng.normal(0, radius * 0.03, (m, 2))
    out += [
        (w, 2)
        for w in walks(rng, crush, rng.uniform(0, 2 * np.pi, m), np.full(m, radius * 0.08), step / 3, bounds, 0.4)
    ]
    return out


def _corner(rng: np.random.Generator, sw: float, sh: float, radius: float, bounds: Bounds, step: float) -> CrackPattern:
    cx, cy = rng.integers(2, size=2)
    corner = np.array([bounds[0] if cx == 0 else bounds[2], bounds[1] if cy == 0 else bounds[3]])
    inward = np.arctan2(sh / 2 - corner[1], sw / 2 - corner[0])
    pat = CrackPattern(impacts=[corner])
    k = int(rng.integers(3, 7))
    angles, lengths = inward + rng.uniform(-0.75, 0.75, k), radius * rng.uniform(0.7, 1.6, k)
    pat.walks += branching_walk(rng, np.tile(corner, (k, 1)), angles, lengths, step, bounds, branch_p=0.1, depth=2)
    m = int(rng.integers(25, 60))
    a, r = inward + rng.uniform(-0.8, 0.8, m), radius * rng.uniform(0, 1, m) ** 0.8
    starts = corner + r[:, None] * np.stack([np.cos(a), np.sin(a)], 1)
    frags = walks(rng, starts, rng.uniform(0, 2 * np.pi, m), radius * rng.uniform(0.08, 0.3, m), step / 2, bounds, 0.3)
    pat.walks += [(w, 1 + int(lvl)) for w, lvl in zip(frags, rng.random(m) < 0.5, strict=True)]
    for _ in range(int(rng.integers(2, 7))):
        a1, r1 = inward + rng.uniform(-0.7, 0.7), radius * rng.uniform(0, 0.5)
        centre = corner + r1 * np.array([np.cos(a1), np.sin(a1)])
        pts = ellipse(*centre, *(radius * rng.uniform(0.04, 0.12, 2)), n=int(rng.integers(3, 7)))
        pat.shards.append(np.clip(pts, bounds[:2], bounds[2:]))
    return pat


def crack_pattern(rng: np.random.Generator, style: str, extent: str, sw: float, sh: float) -> CrackPattern:
    """A fracture of ``style`` on a ``sw`` x ``sh`` mm screen, sized by ``extent`` (small/medium/large)."""
    diag = float(np.hypot(sw, sh))
    margin = 0.004 * diag
    bounds = (margin, margin, sw - margin, sh - margin)
    radius = diag * rng.uniform(*EXTENT_RADIUS[extent])
    step = diag / rng.uniform(35, 60)
    if style == "corner_shatter":
        return _corner(rng, sw, sh, radius * 1.3, bounds, step)
    if style == "branching":
        pat = CrackPattern()
        k = int(rng.integers(1, 3) if extent == "small" else rng.integers(2, 6))
        starts = []
        for _ in range(k):
            if rng.random() < 0.6:
                t = rng.uniform(0.1, 0.9)
                edge = [[t * sw, margin], [sw - margin, t * sh], [t * sw, sh - margin], [margin, t * sh]][
                    int(rng.integers(4))
                ]
                starts.append(np.array(edge))
            else:
                starts.append(np.array([rng.uniform(0.15, 0.85) * sw, rng.uniform(0.15, 0.85) * sh]))
        starts_arr = np.array(starts)
        toward = np.array([sw, sh]) * rng.uniform(0.25, 0.75, (k, 2)) - starts_arr
        angles = np.arctan2(toward[:, 1], toward[:, 0]) + rng.normal(0, 0.5, k)
        pat.impacts = list(starts_arr)
        pat.walks = branching_walk(
            rng, starts_arr, angles, radius * rng.uniform(1.6, 3.0, k), step, bounds, branch_p=rng.uniform(0.05, 0.14)
        )
        return pat
    centres = [np.array([rng.uniform(0.08, 0.92) * sw, rng.uniform(0.08, 0.92) * sh])]
    if style == "double_impact":
        centres.append(np.array([rng.uniform(0.08, 0.92) * sw, rng.uniform(0.08, 0.92) * sh]))
        radius *= 0.7
    pat = CrackPattern(impacts=centres)
    for c in centres:
        pat.walks += _spiderweb(
            rng, c, radius, bounds, step, rings=int(rng.integers(1, 3 if style == "double_impact" else 5))
        )
    if style == "double_impact":
        d = centres[1] - centres[0]
        pat.walks += branching_walk(
            rng,
            centres[0][None],
            np.array([np.arctan2(d[1], d[0])]),
            np.array([np.hypot(*d)]),
            step,
            bounds,
            wiggle=0.1,
        )
    return pat
