"""The procedural ticket-photo generator: determinism, labels and masks, encoding, sizes, splits and folders."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter, ImageOps

from model.synth import CLASSES, HELD_OUT, SPLITS, SynthPhoto, render_photo, sample_factors, write_imagefolder
from model.synth.factors import ASPECTS, DEFAULT_LONG_SIDE

DAMAGE, RETURNS = CLASSES
SMALL = (160, 120)
ORIENTATION_TAG = 0x0112


def _pixels(photo: SynthPhoto) -> np.ndarray:
    return np.asarray(photo.image)


def test_public_constants() -> None:
    assert CLASSES == ("screen_damage", "general_returns")
    assert SPLITS == ("train", "val", "test", "shifted")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("label", CLASSES)
def test_same_arguments_give_identical_photos(label: str, split: str) -> None:
    a = render_photo(7, label, split=split)
    b = render_photo(7, label, split=split)
    assert np.array_equal(_pixels(a), _pixels(b))
    assert a.encode() == b.encode()
    assert a.factors == b.factors
    assert (a.crack_mask is None) == (b.crack_mask is None)
    if a.crack_mask is not None:
        assert np.array_equal(a.crack_mask, b.crack_mask)


def test_different_seeds_and_labels_differ() -> None:
    photos = [render_photo(seed, label, size=SMALL) for seed in range(4) for label in CLASSES]
    for i, a in enumerate(photos):
        for b in photos[i + 1 :]:
            assert not np.array_equal(_pixels(a), _pixels(b))


@pytest.mark.parametrize("seed", range(10))
def test_labels_masks_and_screen_boxes_agree(seed: int) -> None:
    damage = render_photo(seed, DAMAGE)
    assert damage.label == DAMAGE
    assert damage.image.mode == "RGB"
    w, h = damage.image.size
    assert (w, h) == (damage.factors["width"], damage.factors["height"])
    assert damage.crack_mask is not None and damage.crack_mask.dtype == bool
    assert damage.crack_mask.shape == (h, w)
    assert damage.crack_mask.any()
    assert damage.screen_box is not None
    x0, y0, x1, y1 = damage.screen_box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    outside = damage.crack_mask.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any(), "crack pixels outside the screen"
    assert damage.crack_box is not None

    returns = render_photo(seed, RETURNS)
    assert returns.label == RETURNS
    assert returns.crack_mask is None
    assert returns.crack_box is None
    if returns.factors["subject"] == "device":
        assert returns.screen_box is not None


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31), label=st.sampled_from(CLASSES), split=st.sampled_from(SPLITS))
def test_any_seed_renders_a_consistent_photo(seed: int, label: str, split: str) -> None:
    photo = render_photo(seed, label, split=split, size=(128, 96))
    assert photo.image.size == (128, 96)
    assert photo.label == label
    assert 1 <= photo.exif_orientation <= 8
    assert 60 <= photo.jpeg_quality <= 95
    assert (photo.crack_mask is not None) == (label == DAMAGE)
    if photo.crack_mask is not None:
        assert photo.crack_mask.shape == (96, 128) and photo.crack_mask.any()
    json.dumps(photo.factors)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_encode_round_trips_through_exif_transpose(orientation: int) -> None:
    photo = dataclasses.replace(render_photo(3, DAMAGE, size=(161, 97)), exif_orientation=orientation)
    original = _pixels(photo).astype(int)
    for fmt in ("JPEG", "PNG", "WEBP"):
        stored = Image.open(io.BytesIO(photo.encode(fmt)))
        assert stored.format == fmt
        assert stored.getexif().get(ORIENTATION_TAG) == orientation
        expected_stored = (97, 161) if orientation >= 5 else (161, 97)
        assert stored.size == expected_stored
        upright = ImageOps.exif_transpose(stored).convert("RGB")
        assert upright.size == photo.image.size
        diff = np.abs(np.asarray(upright).astype(int) - original)
        if fmt == "PNG":
            assert diff.max() == 0
        else:
            assert diff.mean() < 8, (fmt, diff.mean())


def test_encode_uses_the_photo_quality_and_rejects_unknown_formats() -> None:
    photo = render_photo(4, RETURNS, size=SMALL)
    low = dataclasses.replace(photo, jpeg_quality=60).encode()
    high = dataclasses.replace(photo, jpeg_quality=95).encode()
    assert len(low) < len(high)
    with pytest.raises(ValueError, match="format"):
        photo.encode("GIF")


@pytest.mark.parametrize("size", [(641, 479), (64, 64), (240, 720)])
def test_requested_size_is_respected(size: tuple[int, int]) -> None:
    for label in CLASSES:
        photo = render_photo(5, label, size=size)
        assert photo.image.size == size
        if photo.crack_mask is not None:
            assert photo.crack_mask.shape == (size[1], size[0])


def test_phone_resolution_scales_the_scene() -> None:
    photo = render_photo(12, DAMAGE, size=(4032, 3024))
    assert photo.image.size == (4032, 3024)
    assert photo.crack_mask is not None and photo.crack_mask.shape == (3024, 4032)
    assert photo.crack_mask.sum() > 2000


def test_default_sizes_are_phone_like() -> None:
    ratios = {round(a / b, 3) for (a, b), _ in ASPECTS.values()}
    for seed in range(60):
        f = sample_factors(seed, CLASSES[seed % 2])
        long_side = max(f["width"], f["height"])
        assert DEFAULT_LONG_SIDE[0] <= long_side <= DEFAULT_LONG_SIDE[1]
        assert min(abs(f["width"] / f["height"] - r) for r in ratios) < 0.01


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="label"):
        render_photo(0, "cracked")
    with pytest.raises(ValueError, match="split"):
        render_photo(0, DAMAGE, split="holdout")
    with pytest.raises(ValueError, match="seed"):
        render_photo(-1, DAMAGE)
    with pytest.raises(ValueError, match="size"):
        render_photo(0, DAMAGE, size=(4, 4))


def test_render_reports_the_sampled_factors() -> None:
    for split in SPLITS:
        sampled = sample_factors(9, DAMAGE, split)
        rendered = render_photo(9, DAMAGE, split=split).factors
        assert {k: rendered[k] for k in sampled} == sampled


def test_held_out_values_only_in_shifted() -> None:
    seen: dict[str, set[object]] = {k: set() for k in HELD_OUT}
    for seed in range(200):
        for label in CLASSES:
            for split in ("train", "val", "test"):
                if split != "train" and seed >= 50:
                    continue
                f = sample_factors(seed, label, split)
                assert f["held_out"] == ""
                for key, values in HELD_OUT.items():
                    assert f.get(key) not in values, (seed, label, split, key)
            shifted = sample_factors(seed, label, "shifted")
            names = [k for k in HELD_OUT if shifted.get(k) in HELD_OUT[k]]
            assert names, (seed, label)
            assert shifted["held_out"] == ",".join(names)
            for key in names:
                seen[key].add(shifted[key])
    for key, values in HELD_OUT.items():
        assert seen[key] == set(values), key


def test_returns_are_mostly_hard_negatives_and_devices_are_balanced() -> None:
    subjects: dict[str, int] = {}
    kinds = {label: {} for label in CLASSES}
    for seed in range(400):
        f = sample_factors(seed, RETURNS)
        subjects[f["subject"]] = subjects.get(f["subject"], 0) + 1
        for label in CLASSES:
            g = sample_factors(seed, label)
            if g["subject"] == "device":
                kinds[label][g["device_kind"]] = kinds[label].get(g["device_kind"], 0) + 1
    assert set(subjects) == {"device", "box", "document", "cable", "packaging", "surface"}
    assert 0.45 < subjects["device"] / 400 < 0.75
    for kind, n in kinds[DAMAGE].items():
        share_damage = n / sum(kinds[DAMAGE].values())
        share_returns = kinds[RETURNS].get(kind, 0) / sum(kinds[RETURNS].values())
        assert abs(share_damage - share_returns) < 0.1, kind


def test_cracks_cover_a_meaningful_part_of_the_screen() -> None:
    covers = [render_photo(seed, DAMAGE, size=(256, 192)).factors["crack_cover"] for seed in range(20)]
    assert np.median(covers) > 0.1


def test_write_imagefolder_writes_a_balanced_tree_with_manifest(tmp_path) -> None:
    counts = write_imagefolder(tmp_path, 5, seed=100, split="val", size=(96, 72))
    assert counts == {DAMAGE: 3, RETURNS: 2}
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert sorted(p.name for p in tmp_path.glob("*/*.jpg")) == sorted(r["file"].split("/")[1] for r in records)
    for r in records:
        assert r["file"].startswith(r["label"] + "/")
        assert r["split"] == "val" and r["factors"]["label"] == r["label"]
        with Image.open(tmp_path / r["file"]) as img:
            assert img.format == "JPEG"
            assert ImageOps.exif_transpose(img).size == (96, 72)
        assert (r["crack_bbox"] is not None) == (r["label"] == DAMAGE)
    again = tmp_path / "again"
    write_imagefolder(again, 5, seed=100, split="val", size=(96, 72))
    for r in records:
        assert (again / r["file"]).read_bytes() == (tmp_path / r["file"]).read_bytes()


def test_every_held_out_value_renders() -> None:
    wanted = {(key, value) for key, values in HELD_OUT.items() for value in values}
    for seed in range(400):
        if not wanted:
            break
        for label in CLASSES:
            f = sample_factors(seed, label, "shifted")
            hits = {(k, f[k]) for k in HELD_OUT if (k, f.get(k)) in wanted}
            if hits:
                photo = render_photo(seed, label, split="shifted", size=(128, 96))
                assert photo.factors["held_out"] == f["held_out"]
                wanted -= hits
    assert not wanted


@pytest.mark.parametrize("seed", [3, 11, 42])
def test_intact_twin_differs_from_its_damaged_photo_only_around_the_crack(seed: int) -> None:
    from model.synth.render import render_twins

    damaged, intact = render_twins(seed, split="train")
    alone = render_photo(seed, "screen_damage", split="train")
    assert np.array_equal(np.asarray(damaged.image), np.asarray(alone.image))  # a twin does not change its photo
    assert intact.label == "general_returns" and intact.crack_mask is None and intact.factors["twin"] is True
    assert not {"crack_style", "crack_width", "crack_extent", "crack_tone"} & set(intact.factors)
    assert intact.screen_box == damaged.screen_box and intact.image.size == damaged.image.size
    changed = np.abs(np.asarray(damaged.image, np.int16) - np.asarray(intact.image, np.int16)).max(-1) > 12
    assert changed.any()
    near_crack = np.asarray(
        Image.fromarray(damaged.crack_mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(9))
    ).astype(bool)
    x0, y0, x1, y1 = damaged.screen_box
    on_screen = np.zeros_like(near_crack)
    on_screen[y0:y1, x0:x1] = True
    # what the twin lacks is the fracture (and an LCD bleed from it, on the screen), nothing off the screen
    assert not (changed & ~near_crack & ~on_screen).any()
    assert (changed & near_crack).sum() >= 0.5 * damaged.crack_mask.sum()
