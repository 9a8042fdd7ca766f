"""Real photographs for the generator: the curated Debian catalogue (``real_photos.json``) or any folder of photos.

Photos are split by photo, never by crop: a photo is held out of training when the first 64 bits of its sha256,
read as a fraction of 2**64, fall below :data:`HELD_OUT_SHARE`. The rule looks at nothing but the photo's own bytes,
so adding or removing other photos never moves a photo from one side to the other. Scenes built on held-out photos
form the ``real`` split; every other split uses the training photos only.

Each process decodes a photo once and keeps a copy of at most :data:`MAX_SIDE` pixels on the long side.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

CATALOGUE = Path(__file__).with_name("real_photos.json")
HELD_OUT_SHARE = 0.25
MAX_SIDE = 1024
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
REAL_SPLIT = "real"


class PhotoSetError(ValueError):
    """Real photos that cannot be used: packages not installed, a missing or empty folder, a changed file."""


@dataclass(frozen=True)
class RealPhoto:
    """One photograph: a readable ``name`` (unique in its set), where it lies, and the sha256 of its bytes."""

    name: str
    path: str
    sha256: str

    @property
    def held_out(self) -> bool:
        """Whether this photo belongs to the ``real`` split (never to training)."""
        return is_held_out(self.sha256)


def is_held_out(sha256: str) -> bool:
    """The split rule: held out when the first 16 hex digits, as a fraction of 2**64, are below the share."""
    return int(sha256[:16], 16) < HELD_OUT_SHARE * 2**64


@dataclass(frozen=True)
class PhotoSet:
    """Photos sorted by sha256 and where they came from (``debian`` or a folder)."""

    photos: tuple[RealPhoto, ...]
    source: str

    @property
    def training(self) -> tuple[RealPhoto, ...]:
        return tuple(p for p in self.photos if not p.held_out)

    @property
    def held_out(self) -> tuple[RealPhoto, ...]:
        return tuple(p for p in self.photos if p.held_out)

    @property
    def digest(self) -> str:
        """sha256 over the sorted photo digests: one value that names the set."""
        return hashlib.sha256("\n".join(p.sha256 for p in self.photos).encode()).hexdigest()

    def for_split(self, split: str) -> tuple[RealPhoto, ...]:
        """The photos scenes of ``split`` may use: held-out ones for ``real``, training ones for the others."""
        chosen = self.held_out if split == REAL_SPLIT else self.training
        if not chosen:
            side = "held out (the real split)" if split == REAL_SPLIT else "left for training"
            raise PhotoSetError(
                f"none of the {len(self.photos)} photos from {self.source} is {side}; a share of about "
                f"{HELD_OUT_SHARE:.0%} is held out by sha256, so give a few more photos"
            )
        return chosen

    def describe(self) -> dict[str, Any]:
        """What a model card records: the source, the set digest, and each side's names and sha256."""
        return {
            "source": self.source,
            "digest": self.digest,
            "held_out_rule": f"sha256[:16] / 2**64 < {HELD_OUT_SHARE}",
            "training": [{"name": p.name, "sha256": p.sha256} for p in self.training],
            "held_out": [{"name": p.name, "sha256": p.sha256} for p in self.held_out],
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def catalogue() -> dict[str, Any]:
    """The curated list: packages, photos (name, package, path, licence, subject, sha256, size) and exclusions."""
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))


def install_hint(packages: list[str]) -> str:
    return f"run `make photos` (apt-get install {' '.join(packages)}), or give --photos DIR"


def debian_photos(verify: bool = True) -> PhotoSet:
    """The catalogue's photos as installed by its Debian packages; each file's sha256 is checked with ``verify``."""
    data = catalogue()
    entries = data["photos"]
    missing = sorted({e["package"] for e in entries if not Path(e["path"]).is_file()})
    if missing:
        raise PhotoSetError(f"the real photographs of {missing} are not installed: {install_hint(data['packages'])}")
    photos = []
    for e in entries:
        if verify and sha256_of(Path(e["path"])) != e["sha256"]:
            raise PhotoSetError(f"{e['path']} ({e['package']}) is not the file {CATALOGUE.name} lists (sha256 differs)")
        photos.append(RealPhoto(e["name"], e["path"], e["sha256"]))
    return PhotoSet(tuple(sorted(photos, key=lambda p: p.sha256)), "debian")


def folder_photos(root: Path) -> PhotoSet:
    """Every JPEG, PNG or WebP photo below ``root`` (a file with the same bytes counts once)."""
    root = Path(root)
    if not root.is_dir():
        raise PhotoSetError(f"--photos {root}: no such folder")
    by_sha: dict[str, RealPhoto] = {}
    for top, _, names in sorted(os.walk(root, followlinks=True)):
        for name in sorted(names):
            path = Path(top) / name
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            try:
                with Image.open(path) as im:
                    im.verify()
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
                continue  # not a photo Pillow can read safely
            sha = sha256_of(path)
            by_sha.setdefault(sha, RealPhoto(str(path.relative_to(root)), str(path), sha))
    if not by_sha:
        raise PhotoSetError(f"--photos {root}: no readable JPEG, PNG or WebP photos in it")
    return PhotoSet(tuple(sorted(by_sha.values(), key=lambda p: p.sha256)), str(root))


def resolve_photos(folder: Path | None) -> PhotoSet:
    """``folder``'s photos, or the Debian catalogue when ``folder`` is None."""
    return debian_photos() if folder is None else folder_photos(folder)


@cache
def pixels(path: str) -> Image.Image:
    """The upright RGB photo at ``path``, decoded once per process, at most :data:`MAX_SIDE` px on its long side."""
    with Image.open(path) as im:
        k = min(1.0, MAX_SIDE / max(im.size))
        im.draft("RGB", (round(im.width * k), round(im.height * k)))  # JPEG: decode at a reduced scale
        upright = ImageOps.exif_transpose(im).convert("RGB")
    upright.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    return upright
