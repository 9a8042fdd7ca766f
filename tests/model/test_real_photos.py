"""Real photographs in the generator: the Debian catalogue, the split by photo, their uses, and ``--photos DIR``.

The catalogue's packages are installed by ``make photos`` (and by ``.ci/run``); without them these tests fail and say
so, they do not skip.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data import DataError, split_seeds
from model.synth import (
    CLASSES,
    PHOTO_SPLITS,
    SPLITS,
    PhotoSet,
    PhotoSetError,
    debian_photos,
    folder_photos,
    render_photo,
    sample_factors,
)
from model.synth import real_photos as real_photos_module
from model.synth.real_photos import HELD_OUT_SHARE, catalogue
from model.synth.real_scenes import REAL_USES, USES

DAMAGE, RETURNS = CLASSES


@pytest.fixture(scope="module")
def debian() -> PhotoSet:
    try:
        return debian_photos()
    except PhotoSetError as exc:
        pytest.fail(f"the real photographs are needed here: {exc}")


def held_out_by_definition(sha256: str) -> bool:
    """The split rule from first principles: the digest's first 8 bytes as a fraction of 2**64."""
    return int.from_bytes(bytes.fromhex(sha256)[:8], "big") / 2**64 < HELD_OUT_SHARE


def test_catalogue_lists_each_installed_photo_once_with_its_licence(debian: PhotoSet) -> None:
    data = catalogue()
    entries = data["photos"]
    assert len(entries) == len(debian.photos) >= 60
    assert len({e["sha256"] for e in entries}) == len(entries) == len({e["path"] for e in entries})
    assert all(e["licence"] and e["subject"] and e["package"] in data["packages"] for e in entries)
    for e in entries:  # the file's bytes are the catalogued ones (debian_photos checks too; this recomputes)
        assert hashlib.sha256(Path(e["path"]).read_bytes()).hexdigest() == e["sha256"], e["path"]
    assert {p.sha256 for p in debian.photos} == {e["sha256"] for e in entries}
    assert all(x["reason"] for x in data["excluded"])


def test_split_by_photo_follows_the_sha256_rule_and_keeps_both_sides(debian: PhotoSet) -> None:
    assert {p.sha256 for p in debian.held_out} == {p.sha256 for p in debian.photos if held_out_by_definition(p.sha256)}
    assert not {p.sha256 for p in debian.held_out} & {p.sha256 for p in debian.training}
    assert len(debian.held_out) >= 10 and len(debian.training) >= 40
    assert len({p.name for p in debian.photos}) == len(debian.photos)


@pytest.mark.parametrize("split", PHOTO_SPLITS)
def test_no_held_out_photo_reaches_training_splits_and_real_uses_only_held_out_ones(
    debian: PhotoSet, split: str
) -> None:
    held = {p.sha256 for p in debian.photos if held_out_by_definition(p.sha256)}
    used = Counter()
    for seed in split_seeds(split, 600, seed=0).tolist():
        for label in CLASSES:
            factors = sample_factors(seed, label, split, photos=debian)
            if factors["photo_use"] != "none":
                used[factors["photo_sha256"] in held] += 1
    if split == "real":
        assert used[True] == 1200 and not used[False]  # every photo of the real split is built on a held-out photo
    else:
        assert used[False] > 300 and not used[True]


def test_rendered_factors_are_the_sampled_ones_and_rendering_is_deterministic(debian: PhotoSet) -> None:
    seen = set()
    for seed in range(40):
        for label in CLASSES:
            factors = sample_factors(seed, label, "train", photos=debian)
            if factors["photo_use"] in seen:
                continue
            seen.add(factors["photo_use"])
            a = render_photo(seed, label, split="train", photos=debian)
            b = render_photo(seed, label, split="train", photos=debian)
            assert a.factors == b.factors
            assert {k: v for k, v in a.factors.items() if k != "crack_cover"} == factors
            assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.encode() == b.encode()
            assert a.image.size == (factors["width"], factors["height"])
    assert seen == {"none", "surface", "backdrop", "screen", "crop"}


def test_without_photos_the_generator_draws_as_before(debian: PhotoSet) -> None:
    """A seed that uses no real photo is the same photo with or without the photo set (own random stream)."""
    for seed in range(20):
        with_photos = sample_factors(seed, DAMAGE, "test", photos=debian)
        if with_photos["photo_use"] == "none":
            plain = render_photo(seed, DAMAGE, split="test", size=(160, 120))
            real = render_photo(seed, DAMAGE, split="test", size=(160, 120), photos=debian)
            assert np.array_equal(np.asarray(plain.image), np.asarray(real.image))
            return
    pytest.fail("no seed below 20 without a real photo")


@pytest.mark.parametrize("split", ["train", "real"])
def test_real_photo_shares_appear_as_configured(debian: PhotoSet, split: str) -> None:
    n = 1500
    table = REAL_USES if split == "real" else USES
    for label in CLASSES:
        uses = Counter(sample_factors(s, label, split, photos=debian)["photo_use"] for s in range(n))
        none_share = uses["none"] / n
        expected = table[label].get("none", 0.0) / sum(table[label].values())
        assert abs(none_share - expected) < 4 * np.sqrt(max(expected * (1 - expected), 1e-4) / n) + 1e-9, uses
        if split == "real":
            assert not uses["none"]
        if label == RETURNS:
            assert uses["crop"] > 0.15 * n
        else:
            assert uses["screen"] > 0.05 * n and not uses["crop"]


def test_crops_are_real_photo_crops_with_the_documented_ranges(debian: PhotoSet) -> None:
    crops = [f for s in range(300) if (f := sample_factors(s, RETURNS, "train", photos=debian))["photo_use"] == "crop"]
    assert len(crops) > 50
    for f in crops:
        assert f["subject"] == "photo_crop" and "device_kind" not in f and f["occluder"] == "none"
        assert 0.74 <= f["width"] / f["height"] <= 1.34
        assert 70 <= f["jpeg_quality"] <= 95
    seed = next(s for s in range(300) if sample_factors(s, RETURNS, "train", photos=debian)["photo_use"] == "crop")
    photo = render_photo(seed, RETURNS, split="train", photos=debian)
    assert photo.label == RETURNS and photo.crack_mask is None and photo.screen_box is None


def test_shifted_photos_keep_a_held_out_factor(debian: PhotoSet) -> None:
    for seed in range(300):
        for label in CLASSES:
            factors = sample_factors(seed, label, "shifted", photos=debian)
            assert factors["held_out"], factors


def _photo_folder(root: Path, n: int) -> Path:
    """``n`` generated JPEGs (procedural photos), enough that both sides of the split hold one."""
    root.mkdir(parents=True)
    for i in range(n):
        image = render_photo(i, CLASSES[i % 2], split="test", size=(160, 120)).image
        image.save(root / f"photo_{i:02d}.jpg", quality=90)
    return root


def test_photos_dir_builds_the_real_split_on_its_own_held_out_photos(tmp_path: Path) -> None:
    from triage_cli.commands import main

    folder = _photo_folder(tmp_path / "mine", 12)
    photos = folder_photos(folder)
    assert len(photos.photos) == 12 and photos.held_out and photos.training
    held = {p.name for p in photos.held_out}
    assert held == {p.name for p in photos.photos if held_out_by_definition(p.sha256)}
    out = tmp_path / "out"
    assert main(["synth", "--photos", str(folder), "--split", "real", "--n", "6", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["factors"]["photo"] for r in records} <= held
    assert main(["synth", "--photos", str(folder), "--split", "train", "--n", "6", "--out", str(tmp_path / "t")]) == 0
    records = [json.loads(line) for line in (tmp_path / "t" / "manifest.jsonl").read_text().splitlines()]
    assert not {r["factors"].get("photo") for r in records} & held
    # Removing photos never moves another photo across the split.
    for path in sorted(folder.iterdir())[:5]:
        path.unlink()
    fewer = folder_photos(folder)
    assert {p.name for p in fewer.held_out} == held & {p.name for p in fewer.photos}


def test_a_missing_or_empty_photo_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.train import TrainOptions, train
    from triage_cli.commands import main

    with pytest.raises(PhotoSetError, match="no such folder"):
        folder_photos(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PhotoSetError, match="no readable"):
        folder_photos(empty)
    assert main(["synth", "--photos", str(empty), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    assert "no readable JPEG, PNG or WebP photos" in capsys.readouterr().err
    with pytest.raises(DataError, match="no such folder"):
        train(TrainOptions(out=tmp_path / "m", photos=tmp_path / "absent", epochs=1, n_train=4))
    assert main(["train", "--photos", str(tmp_path / "absent"), "--epochs", "1", "--out", str(tmp_path / "m")]) == 2
    assert "no such folder" in capsys.readouterr().err
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(one / "a.jpg")
    side = "left for training" if held_out_by_definition(folder_photos(one).photos[0].sha256) else "held out"
    with pytest.raises(PhotoSetError, match=side):
        for split in ("train", "real"):
            folder_photos(one).for_split(split)


def test_missing_packages_or_changed_files_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (32, 32)).save(photo)
    entry = {"name": "some-backgrounds:absent", "package": "some-backgrounds", "path": str(tmp_path / "absent.jpg")}
    entry["sha256"] = "0" * 64
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"packages": ["some-backgrounds"], "photos": [entry]}))
    monkeypatch.setattr(real_photos_module, "CATALOGUE", listing)
    with pytest.raises(PhotoSetError, match=r"not installed: run `make photos` \(apt-get install some-backgrounds\)"):
        debian_photos()
    listing.write_text(json.dumps({"packages": ["some-backgrounds"], "photos": [entry | {"path": str(photo)}]}))
    with pytest.raises(PhotoSetError, match="sha256 differs"):
        debian_photos()


def test_real_split_needs_photos() -> None:
    assert "real" not in SPLITS and "real" in PHOTO_SPLITS
    with pytest.raises(ValueError, match="real split"):
        render_photo(0, DAMAGE, split="real")
