"""Datasets as arrays of letterboxed ``uint8 (N, S, S, 3)`` pixels and ``int64 (N,)`` labels, and for generated
photos where their cracks lie (``model.crack_cells``).

Every photo goes through the serving path (``model.preprocess.prepare`` on the encoded file bytes), so training,
evaluation and serving see identical inputs. Synthetic splits draw from disjoint seed ranges; the ``shifted``
split also draws generator factors held out of training.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from model.config import CLASSES, Preprocessing
from model.crack_cells import CELL_PX, crack_cells
from model.preprocess import PHOTO_SUFFIXES, prepare

if TYPE_CHECKING:  # the generator is imported where photos are rendered
    from model.synth.real_photos import PhotoSet

log = logging.getLogger(__name__)

# Seed ranges per split: photo i of a split with training seed s uses SPLIT_OFFSETS[split] + s * 1_000_000 + i.
SPLIT_OFFSETS = {
    "train": 0, "val": 1_000_000_000, "test": 2_000_000_000, "shifted": 3_000_000_000, "real": 4_000_000_000,
}  # fmt: skip
IMAGE_SUFFIXES = PHOTO_SUFFIXES  # what the service accepts
FOLDER_FRACTIONS = (0.7, 0.15, 0.15)  # how a photo folder splits into train, val and test (by class, seeded)
OTHER_IMAGE_SUFFIXES = {".bmp", ".gif", ".tif", ".tiff", ".avif"}  # reported as skipped: the service refuses them


class DataError(ValueError):
    """A photo folder that cannot be trained on (missing or empty class folders, nothing readable)."""


@dataclass(frozen=True)
class ArrayDataset:
    pixels: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # int64 (N,)
    source: str
    crack_cells: np.ndarray | None = None  # float32 (N, S / CELL_PX, S / CELL_PX) crack pixels; None: unknown
    names: tuple[str, ...] | None = None  # each photo's file, relative to the folder it was read from; None: generated

    def __len__(self) -> int:
        return len(self.labels)


def split_seeds(split: str, n: int, seed: int) -> np.ndarray:
    """The generator seeds of a split; ranges of different splits never overlap."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_OFFSETS)}")
    if n > 1_000_000:
        raise ValueError(f"at most 1,000,000 photos per split and seed, got {n}")
    return SPLIT_OFFSETS[split] + seed * 1_000_000 + np.arange(n, dtype=np.int64)


Job = tuple[int, int, str, Preprocessing, bool, "PhotoSet | None"]  # seed, label, split, spec, twin, real photos


def _render_one(job: Job) -> list[tuple[np.ndarray, np.ndarray]]:
    """One photo, or with ``twin`` a damaged photo and its intact twin: ``[(pixels, crack cells), ...]``."""
    from model.synth import render_photo
    from model.synth.render import render_twins

    photo_seed, label, split, spec, twin, real = job
    if twin:
        photos = render_twins(photo_seed, split=split, photos=real)
    else:
        photos = (render_photo(photo_seed, CLASSES[label], split=split, photos=real),)
    out = []
    for photo in photos:
        prepared = prepare(photo.encode(), spec)
        out.append((prepared.pixels, crack_cells(photo.crack_mask, prepared.geometry)))
    return out


def twin_pairs(n: int, twins: float) -> np.ndarray:
    """Which of the ``n // 2`` (screen_damage, general_returns) slot pairs hold a damaged photo and its intact twin:
    a ``twins`` share of them, spread evenly."""
    if not 0.0 <= twins <= 1.0:
        raise ValueError(f"twins must be a share in [0, 1], got {twins}")
    k = np.arange(n // 2)
    return np.floor((k + 1) * twins) > np.floor(k * twins)


def _jobs(split: str, n: int, spec: Preprocessing, seed: int, twins: float, photos: PhotoSet | None) -> list[Job]:
    seeds = split_seeds(split, n, seed)
    paired = twin_pairs(n, twins)
    jobs = []
    for i in range(n):
        if i % 2 == 1 and paired[i // 2]:
            continue  # filled by the twin of photo i - 1
        twin = i % 2 == 0 and i // 2 < len(paired) and bool(paired[i // 2])
        jobs.append((int(seeds[i]), i % len(CLASSES), split, spec, twin, photos))
    return jobs


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, int(os.environ.get("TRIAGE_DATA_WORKERS", "0")) or os.cpu_count() or 1))


def synthetic_split(
    split: str,
    n: int,
    spec: Preprocessing,
    seed: int = 0,
    cache: Path | None = None,
    twins: float = 0.0,
    photos: PhotoSet | None = None,
) -> ArrayDataset:
    """Render ``n`` photos (balanced, alternating labels) of ``split``, preprocess them and place their cracks.

    ``twins`` is the share of general_returns photos that are the intact twins of the screen_damage photo beside
    them (``model.synth.render.render_twins``) instead of photos of their own seed. ``photos`` are the real
    photographs a share of photos is built on (``model.synth.real_scenes``; the ``real`` split needs them).
    With ``cache`` set, the arrays are stored there under a key of (generator version, split, n, seed, spec, twins,
    photo set digest).
    """
    from model.synth import GENERATOR_VERSION

    what = f"{GENERATOR_VERSION}|{split}|{n}|{seed}|{spec.to_json()}|crack cells {CELL_PX} px"
    if twins:
        what += f"|twins {twins}"
    if photos is not None:
        what += f"|photos {photos.digest}"
    key = hashlib.sha256(what.encode()).hexdigest()[:16]
    path = cache / f"synth-{split}-{n}-{key}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as data:
            return ArrayDataset(data["pixels"], data["labels"], f"synthetic:{split}", data["crack_cells"])
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    jobs = _jobs(split, n, spec, seed, twins, photos)
    workers = _workers()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rendered = [photo for photos in pool.map(_render_one, jobs, chunksize=64) for photo in photos]
    else:
        rendered = [photo for job in jobs for photo in _render_one(job)]
    pixels = np.stack([p for p, _ in rendered])
    cells = np.stack([c for _, c in rendered])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, pixels=pixels, labels=labels, crack_cells=cells)
    return ArrayDataset(pixels, labels, f"synthetic:{split}", cells)


def _class_files(root: Path) -> Iterable[tuple[Path, int]]:
    missing = [c for c in CLASSES if not (root / c).is_dir()]
    if missing:
        raise DataError(f"{root} must hold one folder per class {list(CLASSES)}; missing {missing}")
    for label, name in enumerate(CLASSES):
        for path in _files_under(root / name):
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES or suffix in OTHER_IMAGE_SUFFIXES:
                yield path, label


def _files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted, following symlinked folders (each real folder once: no cycles)."""
    seen: set[str] = set()
    files = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        files += [Path(top) / n for n in names if (Path(top) / n).is_file()]
    return sorted(files)


def image_folder(root: Path, spec: Preprocessing) -> tuple[ArrayDataset, list[tuple[Path, str]]]:
    """Load an ImageFolder tree ``root/screen_damage/*``, ``root/general_returns/*``.

    Unreadable files are skipped and returned with the reason, so the caller can report them.
    """
    pixels, labels, names, skipped = [], [], [], []
    for path, label in _class_files(root):
        if path.suffix.lower() in OTHER_IMAGE_SUFFIXES:
            skipped.append((path, "not JPEG, PNG, WebP or HEIC/HEIF, which is all the service accepts"))
            continue
        try:
            pixels.append(prepare(path.read_bytes(), spec).pixels)
            labels.append(label)
            names.append(str(path.relative_to(root)))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
            skipped.append((path, f"{type(exc).__name__}: {exc}"))
    empty = [name for k, name in enumerate(CLASSES) if k not in labels]
    if empty:
        raise DataError(f"no readable photos in {[str(root / name) for name in empty]} ({len(skipped)} unreadable)")
    size = spec.size
    stacked = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    labels_array = np.asarray(labels, dtype=np.int64)
    return ArrayDataset(stacked, labels_array, f"folder:{root}", names=tuple(names)), skipped


def stratified_split(data: ArrayDataset, fractions: tuple[float, ...], seed: int) -> tuple[ArrayDataset, ...]:
    """Split a dataset into parts of the given fractions, keeping the class balance in each part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(data.labels):
        idx = rng.permutation(np.flatnonzero(data.labels == label))
        bounds = np.round(np.cumsum((0.0, *fractions)) / sum(fractions) * len(idx)).astype(int)
        for i in range(len(fractions)):
            parts[i].append(idx[bounds[i] : bounds[i + 1]])
    out = []
    for chunks in parts:
        idx = np.sort(np.concatenate(chunks))
        cells = None if data.crack_cells is None else data.crack_cells[idx]
        names = None if data.names is None else tuple(data.names[i] for i in idx)
        out.append(ArrayDataset(data.pixels[idx], data.labels[idx], data.source, cells, names))
    return tuple(out)
