"""Batch augmentation against torchvision's own functions, photo by photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from model.augment import Draw, Jitter, apply, draw


@pytest.fixture
def photos() -> torch.Tensor:
    """Six mid-tone photos: no intermediate value of the jitter leaves [0, 1], so no clamp can differ."""
    rng = np.random.default_rng(7)
    return torch.from_numpy(rng.integers(80, 150, size=(6, 3, 20, 28), dtype=np.uint8))


def torchvision_reference(photo: torch.Tensor, choices: Draw, i: int) -> torch.Tensor:
    x = F.to_dtype(photo, torch.float32, scale=True)
    if choices.flip[i]:
        x = F.horizontal_flip(x)
    x = F.adjust_brightness(x, float(choices.brightness[i]))
    x = F.adjust_contrast(x, float(choices.contrast[i]))
    return F.adjust_saturation(x, float(choices.saturation[i]))


def test_each_photo_gets_torchvisions_flip_brightness_contrast_and_saturation(photos: torch.Tensor) -> None:
    choices = draw(len(photos), torch.Generator().manual_seed(1))
    assert choices.flip.any() and not choices.flip.all()  # both branches are exercised
    out = apply(photos, choices)
    for i, photo in enumerate(photos):
        torch.testing.assert_close(out[i], torchvision_reference(photo, choices, i), atol=2e-6, rtol=0)


def test_normalisation_is_folded_in(photos: torch.Tensor) -> None:
    choices = draw(len(photos), torch.Generator().manual_seed(4))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = F.normalize(apply(photos, choices), list(mean), list(std))
    torch.testing.assert_close(apply(photos, choices, mean, std), expected, atol=1e-5, rtol=0)


def test_output_is_clamped_to_the_unit_range_before_normalising() -> None:
    photos = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(8).view(2, 1, 2, 4).expand(2, 3, 2, 4)
    bright = Draw(torch.tensor([False, False]), torch.tensor([1.25, 1.25]), torch.ones(2), torch.ones(2))
    out = apply(photos.contiguous(), bright)
    assert out.min() == 0.0 and out.max() == 1.0


def test_photos_are_drawn_independently_and_reproducibly(photos: torch.Tensor) -> None:
    a = draw(64, torch.Generator().manual_seed(5))
    b = draw(64, torch.Generator().manual_seed(5))
    assert torch.equal(a.brightness, b.brightness) and torch.equal(a.flip, b.flip)
    assert a.brightness.unique().numel() == 64
    assert a.brightness.min() >= 0.75 and a.brightness.max() <= 1.25
    none = draw(64, torch.Generator().manual_seed(5), Jitter(0.0, 0.0, 0.0, flip=False))
    torch.testing.assert_close(apply(photos, draw(6, torch.Generator(), Jitter(0, 0, 0, False))), photos / 255.0)
    assert not none.flip.any()


def test_channels_last_batches_stay_channels_last(photos: torch.Tensor) -> None:
    batch = photos.contiguous(memory_format=torch.channels_last)
    out = apply(batch, draw(batch.shape[0], torch.Generator().manual_seed(6)))
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4, dtype=torch.uint8)])
def test_wrong_dtype_or_layout_is_named(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"augment expects uint8 \(N, 3, H, W\)"):
        apply(bad, draw(bad.shape[0], torch.Generator()))


def test_a_draw_for_another_batch_size_is_refused(photos: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="a draw for 4 photos cannot augment a batch of 6"):
        apply(photos, draw(4, torch.Generator()))
