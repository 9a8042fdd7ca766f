"""Crack masks in network-input cells, the last stage's crack targets, the crack head's loss, and the batches that
carry the cells through augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.config import NetworkConfig, Preprocessing
from model.crack_cells import CELL_PX, crack_cells
from model.crack_supervision import MIN_CRACK_PX, POS_WEIGHT, CrackHead, crack_head, crack_targets, describe
from model.data import ArrayDataset
from model.preprocess import letterbox_geometry
from model.train import training_batches


def test_a_crack_lands_in_the_cell_the_letterbox_puts_it_with_its_area_scaled() -> None:
    # A 512x256 photo letterboxed into 256: scaled by 1/2, pasted 64 px down.
    geometry = letterbox_geometry(512, 256, 256)
    assert (geometry.new_width, geometry.new_height, geometry.pad_x, geometry.pad_y) == (256, 128, 0, 64)
    mask = np.zeros((256, 512), bool)
    mask[32:48, 96:112] = True  # 256 photo pixels -> input x 48..56, y 64 + 16..24: cell (row 10, column 6)
    cells = crack_cells(mask, geometry)
    assert cells.shape == (256 // CELL_PX, 256 // CELL_PX) and cells.dtype == np.float32
    assert cells.sum() == pytest.approx(256 * 0.5**2, rel=0.01)
    assert np.unravel_index(cells.argmax(), cells.shape) == (10, 6)
    assert cells[10, 6] >= 0.8 * cells.sum()
    assert cells[: 64 // CELL_PX].sum() == 0 and cells[(64 + 128) // CELL_PX :].sum() == 0  # nothing in the padding


def test_an_intact_photo_has_no_crack_cells_and_bad_shapes_are_named() -> None:
    geometry = letterbox_geometry(640, 480, 256)
    assert not crack_cells(None, geometry).any()
    with pytest.raises(ValueError, match=r"\(480, 641\)"):
        crack_cells(np.zeros((480, 641), bool), geometry)
    with pytest.raises(ValueError, match="not a multiple"):
        crack_cells(None, letterbox_geometry(640, 480, 250))


def test_targets_mark_the_last_stage_cells_that_hold_enough_crack() -> None:
    config = NetworkConfig()
    size = config.preprocessing.size
    last = size // 32  # stride 2 and four 2x2 pools: the last stage sees 32 px per cell
    cells = torch.zeros(2, size // CELL_PX, size // CELL_PX)
    cells[0, 13, 9] = MIN_CRACK_PX  # input pixels 104..112 x 72..80: last-stage cell (3, 2)
    cells[1, 0, 0] = cells[1, 0, 1] = MIN_CRACK_PX / 2 - 0.01  # together just short of the threshold
    targets = crack_targets(cells, config)
    assert targets.shape == (2, 1, last, last)
    assert targets[0, 0, 3, 2] == 1 and targets.sum() == 1


def test_targets_follow_the_network_to_another_input_size() -> None:
    config = NetworkConfig(preprocessing=Preprocessing(size=320))
    cells = torch.zeros(1, 320 // CELL_PX, 320 // CELL_PX)
    cells[0, -1, -1] = 10.0
    targets = crack_targets(cells, config)
    assert targets.shape == (1, 1, 10, 10) and targets[0, 0, 9, 9] == 1 and targets.sum() == 1


def test_the_crack_loss_is_weighted_binary_cross_entropy() -> None:
    head = CrackHead(4)
    features = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    targets = (torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(2)) > 0.7).float()
    z = head(features).detach()
    p = 1 / (1 + torch.exp(-z))
    expected = -(POS_WEIGHT * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert math.isclose(float(head.loss(features, targets).detach()), float(expected), rel_tol=1e-5)


def test_batches_mirror_the_crack_cells_of_flipped_photos() -> None:
    n, size = 64, 32
    pixels = np.zeros((n, size, size, 3), np.uint8)
    pixels[:, :, : size // 2] = 200  # bright left half
    cells = np.zeros((n, size // CELL_PX, size // CELL_PX), np.float32)
    cells[:, :, 0] = 5.0  # crack in the left column
    data = ArrayDataset(pixels, np.arange(n) % 2, "test", cells)
    spec = Preprocessing(size=size)
    flipped = kept = 0
    for x, _, batch_cells in training_batches(data, spec, 16, torch.Generator().manual_seed(3)):
        assert batch_cells is not None
        left_brighter = x[:, :, :, : size // 2].mean(dim=(1, 2, 3)) > x[:, :, :, size // 2 :].mean(dim=(1, 2, 3))
        crack_left = batch_cells[:, :, 0].sum(dim=1) > 0
        assert torch.equal(left_brighter, crack_left)
        assert torch.equal(batch_cells[:, :, -1].sum(dim=1) > 0, ~crack_left)
        flipped += int((~left_brighter).sum())
        kept += int(left_brighter.sum())
    assert flipped > 0 and kept > 0
    without = ArrayDataset(pixels, np.arange(n) % 2, "test")
    assert all(c is None for _, _, c in training_batches(without, spec, 16, torch.Generator().manual_seed(3)))


def test_the_head_is_made_only_with_a_positive_weight_and_crack_cells() -> None:
    config = NetworkConfig()
    cells = np.zeros((4, 32, 32), np.float32)
    head = crack_head(config, 1.0, cells)
    assert isinstance(head, CrackHead) and head.conv.in_channels == config.stages[-1].channels
    assert crack_head(config, 0.0, cells) is None and crack_head(config, 1.0, None) is None
    assert describe(head, 2.0)["used"] and describe(None, 2.0) == describe(crack_head(config, 0.0, cells), 0.0)
    with pytest.raises(ValueError, match="-1"):
        crack_head(config, -1.0, cells)
