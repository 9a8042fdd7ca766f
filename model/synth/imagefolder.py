"""Writing rendered photos as an ImageFolder tree (``<out>/<class>/*.jpg``) with a JSON-lines manifest."""

from __future__ import annotations

import json
from pathlib import Path

from model.synth.factors import CLASSES, PHOTO_SPLITS
from model.synth.real_photos import PhotoSet
from model.synth.render import render_photo

MANIFEST = "manifest.jsonl"


def write_imagefolder(
    out: Path,
    n: int,
    *,
    seed: int = 0,
    split: str = "train",
    size: tuple[int, int] | None = None,
    photos: PhotoSet | None = None,
) -> dict[str, int]:
    """Render ``n`` photos (classes alternate, so the tree is balanced) with seeds ``seed .. seed + n - 1``.

    Files are the JPEG bytes from :meth:`SynthPhoto.encode` (EXIF orientation included). ``manifest.jsonl``
    has one record per file: path, label, seed, split, size, EXIF orientation, JPEG quality, crack and
    screen boxes and the factor dict (with ``photos``, the real photo each file uses: ``photo``, ``photo_sha256``).
    Returns the number of files per class.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in PHOTO_SPLITS:
        raise ValueError(f"split must be one of {PHOTO_SPLITS}, got {split!r}")
    out = Path(out)
    for label in CLASSES:
        (out / label).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(CLASSES, 0)
    with (out / MANIFEST).open("w", encoding="utf-8") as manifest:
        for i in range(n):
            label = CLASSES[i % len(CLASSES)]
            photo_seed = seed + i
            photo = render_photo(photo_seed, label, split=split, size=size, photos=photos)
            rel = f"{label}/{split}_{photo_seed:08d}.jpg"
            (out / rel).write_bytes(photo.encode("JPEG"))
            record = {
                "file": rel,
                "label": label,
                "seed": photo_seed,
                "split": split,
                "width": photo.image.width,
                "height": photo.image.height,
                "exif_orientation": photo.exif_orientation,
                "jpeg_quality": photo.jpeg_quality,
                "crack_bbox": list(photo.crack_box) if photo.crack_box else None,
                "screen_box": list(photo.screen_box) if photo.screen_box else None,
                "factors": photo.factors,
            }
            manifest.write(json.dumps(record, sort_keys=True) + "\n")
            counts[label] += 1
    return counts
