"""Receptive fields: analytic boxes against autograd gradient support, output sizes, and photo mapping under EXIF."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model.config import SIX_STAGES, ConvBN, NetworkConfig, Preprocessing, Stage
from model.efficientnet import EfficientNetLite
from model.network import TriageNet, build_network
from model.preprocess import letterbox_geometry, prepare
from model.receptive_field import (
    ClippedBox,
    UnclippedBox,
    cell_field,
    cell_field_in_photo,
    format_table,
    layer_fields,
    stage_fields,
    table,
)

CONFIG = NetworkConfig(preprocessing=Preprocessing(size=72))  # default geometry; 72 exercises floor-mode pooling


def geometry_proxy(config: NetworkConfig, seed: int) -> tuple[torch.nn.Module, dict[str, int]]:
    """``config.layers()`` as a linear float64 network: random convs, max-pool -> average pool, no ReLU/BN.

    Why this measures the receptive field exactly: the field is the set of input pixels a cell can depend on.
    ReLU and max-pool only *select* among the paths a linear network has (ReLU zeros some, max-pool keeps one per
    window), and batch-norm scales channels, so no input of the real network reaches outside the proxy's
    dependence set; the average pool spreads every gradient over its whole window and, with random non-zero
    weights, the proxy's gradient of one cell is non-zero on exactly its field (no cancellation happens with
    probability one). The real network's per-input supports are checked to lie inside the box separately.
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    marks: dict[str, int] = {}
    channels = config.in_channels
    for geo in config.layers():
        if geo.kind == "conv":
            conv = torch.nn.Conv2d(channels, 2, geo.kernel, geo.stride, geo.padding, geo.dilation, dtype=torch.float64)
            with torch.no_grad():
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen, dtype=torch.float64) + 0.5)
                conv.weight.mul_(torch.randint(0, 2, conv.weight.shape, generator=gen) * 2 - 1)
            layers.append(conv)
            channels = 2
        else:
            layers.append(torch.nn.AvgPool2d(geo.kernel, geo.stride))
        marks[geo.stage] = len(layers)
    return torch.nn.Sequential(*layers), marks


def gradient_support(model: torch.nn.Module, upto: int, x: torch.Tensor, y: int, x_: int) -> np.ndarray:
    """Boolean ``(H, W)``: input pixels where d(sum over channels of cell (y, x_) after layer ``upto``)/dinput != 0."""
    x = x.clone().requires_grad_(True)
    out = model[:upto](x)
    out[0, :, y, x_].sum().backward()
    return (x.grad[0] != 0).any(dim=0).numpy()


def box_mask(shape: tuple[int, int], box: ClippedBox, offset: int = 0) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box.y0 + offset : box.y1 + offset, box.x0 + offset : box.x1 + offset] = True
    return mask


def probe_cells(out_size: tuple[int, int]) -> list[tuple[int, int]]:
    h, w = out_size
    return sorted({(h // 2, w // 2), (0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)})


def test_analytic_boxes_equal_gradient_support_for_every_stage() -> None:
    """Clipped boxes against the support on the 72x72 input; unclipped boxes against the support on an input grown
    by ``margin`` pixels on every side, where cell ``(y, x)`` becomes ``(y + margin / jump, x + margin / jump)``
    (``margin`` is a multiple of every jump and exceeds every overhang, so the whole unclipped box is real input)."""
    size = CONFIG.preprocessing.size
    fields = stage_fields(CONFIG)
    margin = 128
    assert all(margin % f.jump == 0 and margin >= -f.first_edge for f in fields.values())
    proxy, marks = geometry_proxy(CONFIG, seed=0)
    small = torch.randn(1, 3, size, size, dtype=torch.float64)
    big = torch.randn(1, 3, size + 2 * margin, size + 2 * margin, dtype=torch.float64)
    for stage, field in fields.items():
        for y, x in probe_cells(field.out_size):
            cell = cell_field(CONFIG, stage, y, x)
            support = gradient_support(proxy, marks[stage], small, y, x)
            assert np.array_equal(support, box_mask((size, size), cell.clipped)), (stage, y, x)
            shift = margin // field.jump
            grown = gradient_support(proxy, marks[stage], big, y + shift, x + shift)
            unclipped = ClippedBox(cell.box.x0, cell.box.y0, cell.box.x1, cell.box.y1)
            assert np.array_equal(grown, box_mask(grown.shape, unclipped, margin)), (stage, y, x)


@pytest.mark.parametrize("hw", [(40, 72), (72, 40)], ids=["wide", "tall"])
def test_boxes_on_a_non_square_input_equal_gradient_support(hw: tuple[int, int]) -> None:
    """Height and width kept apart: output sizes, the cell range and clipping to the input on a non-square input
    against gradient support and PyTorch's own map sizes."""
    proxy, marks = geometry_proxy(CONFIG, seed=3)
    x = torch.randn(1, 3, *hw, dtype=torch.float64)
    for stage, field in stage_fields(CONFIG, hw).items():
        assert field.out_size == tuple(proxy[: marks[stage]](x).shape[2:]), stage
        for y, x_ in probe_cells(field.out_size):
            cell = cell_field(CONFIG, stage, y, x_, hw)
            assert np.array_equal(gradient_support(proxy, marks[stage], x, y, x_), box_mask(hw, cell.clipped))
        h, w = field.out_size
        if h != w:
            with pytest.raises(ValueError, match="outside"):
                cell_field(CONFIG, stage, *((0, w) if w < h else (h, 0)), hw)  # valid were H and W swapped


DILATED = NetworkConfig(
    stages=(
        Stage("stage1", 4, stride=2, pool=0),
        Stage("stage2", 4, padding=2, dilation=2),
        Stage("stage3", 4, kernel=5, padding=3, dilation=3, pool=0),
    ),
    preprocessing=Preprocessing(size=40),
)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_dilated_fields_span_exactly_what_the_cells_depend_on() -> None:
    """With dilation a cell's support has holes; the analytic box must be its bounding box (start and size both
    scale with dilation), measured on an input grown so that no box is clipped."""
    fields = stage_fields(DILATED)
    size = DILATED.preprocessing.size
    margin = 64
    assert all(margin % f.jump == 0 and margin >= -f.first_edge for f in fields.values())
    proxy, marks = geometry_proxy(DILATED, seed=1)
    big = torch.randn(1, 3, size + 2 * margin, size + 2 * margin, dtype=torch.float64)
    for stage, field in fields.items():
        assert field.start == field.first_edge + field.size / 2  # the centre, where the measured box puts it
        for y, x in probe_cells(field.out_size):
            cell = cell_field(DILATED, stage, y, x)
            shift = margin // field.jump
            support = gradient_support(proxy, marks[stage], big, y + shift, x + shift)
            x0, y0, x1, y1 = bounding_box(support)
            assert (x0 - margin, y0 - margin, x1 - margin, y1 - margin) == (
                cell.box.x0,
                cell.box.y0,
                cell.box.x1,
                cell.box.y1,
            ), (stage, y, x)


def test_real_network_gradient_support_stays_inside_the_box() -> None:
    """With ReLU and max-pool the per-input support is a subset of the box (never outside it) and non-empty."""
    torch.manual_seed(1)
    net = TriageNet(CONFIG).double().eval()
    size = CONFIG.preprocessing.size
    for stage, field in stage_fields(CONFIG).items():
        for y, x in probe_cells(field.out_size):
            clipped = box_mask((size, size), cell_field(CONFIG, stage, y, x).clipped)
            union = np.zeros((size, size), dtype=bool)
            for _ in range(3):
                inp = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
                _, maps = net.forward_stages(inp)
                maps[stage][0, :, y, x].sum().backward()
                union |= (inp.grad[0] != 0).any(dim=0).numpy()
            assert union.any() and not (union & ~clipped).any(), (stage, y, x)


@st.composite
def random_stages(draw: st.DrawFn) -> tuple[NetworkConfig, int]:
    stages = []
    for i in range(draw(st.integers(1, 2))):
        kernel, dilation = draw(st.integers(1, 5)), draw(st.integers(1, 3))
        stages.append(
            Stage(
                f"s{i}",
                1,
                kernel,
                draw(st.integers(1, 3)),
                draw(st.integers(0, 3)),
                dilation,
                draw(st.sampled_from([0, 2, 3])),
            )
        )
    return NetworkConfig(stages=tuple(stages), in_channels=1), draw(st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(random_stages())
def test_output_sizes_equal_pytorch(case: tuple[NetworkConfig, int]) -> None:
    config, size = case
    try:
        fields = stage_fields(config, size)
    except ValueError:
        with pytest.raises(RuntimeError):
            TriageNet(config).eval().forward_stages(torch.zeros(1, 1, size, size))
        return
    with torch.no_grad():
        _, maps = TriageNet(config).eval().forward_stages(torch.zeros(1, 1, size, size))
    assert {name: tuple(m.shape[2:]) for name, m in maps.items()} == {n: f.out_size for n, f in fields.items()}


def test_recurrences_and_default_table() -> None:
    for f in layer_fields(NetworkConfig()):
        assert f.start == f.first_edge + f.size / 2
    rows = table(NetworkConfig())
    assert [(r.name, r.shape, r.size, r.jump, r.start) for r in rows] == [
        ("stage1", (24, 64, 64), 5, 4, 1.5),
        ("stage2", (48, 32, 32), 17, 8, 3.5),
        ("stage3", (64, 32, 32), 33, 8, 3.5),  # no pool: the field grows by (3 - 1) x 8
        ("stage4", (64, 16, 16), 57, 16, 7.5),  # conv: 33 + 2 x 8 = 49; pool: 49 + 8 = 57, jump 16
        ("stage5", (96, 16, 16), 89, 16, 7.5),
        ("stage6", (96, 8, 8), 137, 32, 15.5),  # conv: 89 + 2 x 16 = 121; pool: 121 + 16 = 137
        ("stage7", (128, 8, 8), 201, 32, 15.5),
        ("stage8", (128, 8, 8), 265, 32, 15.5),
    ]
    assert "| stage8 | (128, 8, 8) | 265 | 32 | 15.5 |" in format_table(rows)
    # Top-right cell: centre (15.5 + 7 * 32, 15.5) = (239.5, 15.5), half-size 132.5.
    corner = cell_field(NetworkConfig(), "stage8", 0, 7)
    assert corner.box == UnclippedBox(107, -117, 372, 148) and corner.clipped == ClippedBox(107, 0, 256, 148)
    with pytest.raises(ValueError, match=r"outside stage8's map of size \(8, 8\)"):
        cell_field(NetworkConfig(), "stage8", 8, 0)
    six = table(NetworkConfig(stages=SIX_STAGES))  # the network shipped before
    assert [(r.name, r.size, r.jump) for r in six][-3:] == [
        ("stage4", 89, 32),
        ("stage5", 153, 32),
        ("stage6", 217, 32),
    ]


# Pillow's transpose that *undoes* each EXIF orientation (what decoding applies), and its inverse (to encode).
_UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {**_UNDO, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def encode_with_orientation(upright: Image.Image, orientation: int) -> bytes:
    """A lossless PNG whose stored pixels, once the EXIF orientation tag is applied, are ``upright``."""
    stored = upright if orientation == 1 else upright.transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("width,height", [(45, 27), (19, 33)])
def test_photo_boxes_are_exact_for_every_exif_orientation(orientation: int, width: int, height: int) -> None:
    spec = Preprocessing(size=64)
    config = NetworkConfig(preprocessing=spec)
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    mark_x, mark_y = width // 3, height // 4  # an asymmetric bright marker: any orientation mistake moves it
    pixels[mark_y, mark_x] = 255
    upright = Image.fromarray(pixels, "RGB")

    prepared = prepare(encode_with_orientation(upright, orientation), spec)
    assert prepared.photo.orientation == orientation
    assert np.array_equal(np.asarray(prepared.photo.image), pixels)  # decoding restored the upright pixels
    direct = letterbox_geometry(width, height, spec.size)
    assert prepared.geometry == direct

    for stage, field in stage_fields(config).items():
        for y, x in probe_cells(field.out_size):
            mapped = cell_field_in_photo(config, stage, y, x, prepared.geometry)
            box = mapped.cell.box
            expected = (
                (box.x0 - direct.pad_x) * width / direct.new_width,
                (box.y0 - direct.pad_y) * height / direct.new_height,
                (box.x1 - direct.pad_x) * width / direct.new_width,
                (box.y1 - direct.pad_y) * height / direct.new_height,
            )
            assert (mapped.box.x0, mapped.box.y0, mapped.box.x1, mapped.box.y1) == expected
            assert mapped == cell_field_in_photo(config, stage, y, x, direct)
            c = mapped.clipped
            assert 0 <= c.x0 <= c.x1 <= width and 0 <= c.y0 <= c.y1 <= height

    # The marker, found in the letterboxed input, lies in the photo box of the stage-1 cell whose box holds it.
    red = prepared.pixels[..., 0].astype(int)
    iy, ix = np.unravel_index(np.argmax(red), red.shape)
    f1 = stage_fields(config)["stage1"]
    cy = min((iy - f1.first_edge) // f1.jump, f1.out_size[0] - 1)
    cx = min((ix - f1.first_edge) // f1.jump, f1.out_size[1] - 1)
    clipped = cell_field_in_photo(config, "stage1", cy, cx, prepared.geometry).clipped
    assert clipped.x0 <= mark_x < clipped.x1 and clipped.y0 <= mark_y < clipped.y1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photo_boxes_use_full_resolution_coordinates_with_jpeg_draft_decoding(orientation: int) -> None:
    """A large odd-size JPEG is decoded at a reduced DCT scale, yet boxes map to full-resolution upright pixels."""
    spec = Preprocessing(size=64)
    config = NetworkConfig(preprocessing=spec)
    width, height = 301, 163
    pixels = np.full((height, width, 3), 30, dtype=np.uint8)
    mark_x, mark_y = 220, 40
    pixels[mark_y - 4 : mark_y + 5, mark_x - 4 : mark_x + 5] = 255
    stored = Image.fromarray(pixels, "RGB")
    stored = stored if orientation == 1 else stored.transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())

    prepared = prepare(buf.getvalue(), spec, fast=True)
    assert max(prepared.photo.image.size) < max(width, height)  # really decoded in the DCT domain
    assert (prepared.photo.width, prepared.photo.height) == (width, height)
    assert prepared.geometry == letterbox_geometry(width, height, spec.size)
    red = prepared.pixels[..., 0].astype(int)
    iy, ix = np.unravel_index(np.argmax(red), red.shape)
    f1 = stage_fields(config)["stage1"]
    cy = min((iy - f1.first_edge) // f1.jump, f1.out_size[0] - 1)
    cx = min((ix - f1.first_edge) // f1.jump, f1.out_size[1] - 1)
    clipped = cell_field_in_photo(config, "stage1", cy, cx, prepared.geometry).clipped
    assert clipped.x0 <= mark_x < clipped.x1 and clipped.y0 <= mark_y < clipped.y1


LITE0 = NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=64))


def narrow_linear_lite0(seed: int) -> EfficientNetLite:
    """EfficientNet-Lite0's exact block structure (expansions, depthwise kernels and strides, residual adds) at an
    eighth of the width, in float64, with ReLU6 removed and random signed weights: a linear network whose gradient
    support is the union of its paths' fields (see ``geometry_proxy``), residual paths included."""
    backbone = LITE0.backbone
    assert backbone is not None

    def eighth(unit: ConvBN) -> ConvBN:
        return replace(unit, in_channels=unit.in_channels // 8, out_channels=unit.out_channels // 8)

    narrow = replace(
        backbone,
        stem=replace(eighth(backbone.stem), in_channels=3),
        blocks=tuple(
            replace(b, in_channels=b.in_channels // 8, out_channels=b.out_channels // 8) for b in backbone.blocks
        ),
        head=eighth(backbone.head),
    )
    assert [b.residual for b in narrow.blocks] == [b.residual for b in backbone.blocks]
    net = EfficientNetLite(LITE0, narrow).double().eval()
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.ReLU6):
            module.forward = lambda x: x  # type: ignore[method-assign]
        if isinstance(module, torch.nn.Conv2d):
            with torch.no_grad():
                w = torch.rand(module.weight.shape, generator=gen, dtype=torch.float64) + 0.5
                module.weight.copy_(w * (torch.randint(0, 2, w.shape, generator=gen) * 2 - 1))
    return net


def stage_supports(
    net: EfficientNetLite, x: torch.Tensor, cells: dict[str, list[tuple[int, int]]]
) -> dict[tuple[str, int, int], np.ndarray]:
    """One forward pass; per requested stage cell, the boolean ``(H, W)`` input pixels its channel sum depends on."""
    x = x.clone().requires_grad_(True)
    _, maps = net.forward_stages(x)
    out = {}
    for stage, where in cells.items():
        for y, x_ in where:
            (grad,) = torch.autograd.grad(maps[stage][0, :, y, x_].sum(), x, retain_graph=True)
            out[stage, y, x_] = (grad[0] != 0).any(dim=0).numpy()
    return out


def test_lite0_boxes_equal_the_gradient_support_through_its_blocks() -> None:
    """The analytic field of every Lite0 stage (``config.layers()``, residual adds not enlarging it) against the
    gradient support of the real block structure made linear: clipped boxes at 64 px for corner and centre cells,
    and each stage's centre cell unclipped, on an input grown by ``margin`` pixels on every side."""
    size = LITE0.preprocessing.size
    fields = stage_fields(LITE0)
    margin = 448
    assert all(margin % f.jump == 0 and margin >= -f.first_edge for f in fields.values())
    net = narrow_linear_lite0(seed=0)
    small = torch.randn(1, 3, size, size, dtype=torch.float64)
    supports = stage_supports(net, small, {stage: probe_cells(f.out_size) for stage, f in fields.items()})
    for (stage, y, x), support in supports.items():
        assert np.array_equal(support, box_mask((size, size), cell_field(LITE0, stage, y, x).clipped)), (stage, y, x)
    big = torch.randn(1, 3, size + 2 * margin, size + 2 * margin, dtype=torch.float64)
    centres = {stage: (f.out_size[0] // 2, f.out_size[1] // 2) for stage, f in fields.items()}
    shifted = {
        stage: [(y + margin // fields[stage].jump, x + margin // fields[stage].jump)]
        for stage, (y, x) in centres.items()
    }
    grown = stage_supports(net, big, shifted)
    for stage, (y, x) in centres.items():
        box = cell_field(LITE0, stage, y, x).box
        support = grown[(stage, *shifted[stage][0])]
        assert np.array_equal(support, box_mask(support.shape, ClippedBox(box.x0, box.y0, box.x1, box.y1), margin)), (
            stage
        )


def test_pretrained_lite0_gradient_support_stays_inside_the_box() -> None:
    """With ReLU6 and the ImageNet weights, an input's support is non-empty and inside the analytic box."""
    torch.manual_seed(2)
    net = build_network(LITE0, pretrained=True).eval()
    size = LITE0.preprocessing.size
    cells = {stage: probe_cells(f.out_size)[:3] for stage, f in stage_fields(LITE0).items()}
    for (stage, y, x), union in stage_supports(net, torch.randn(1, 3, size, size), cells).items():
        clipped = box_mask((size, size), cell_field(LITE0, stage, y, x).clipped)
        assert union.any() and not (union & ~clipped).any(), (stage, y, x)


def test_lite0_table_follows_the_recurrences_by_hand() -> None:
    """Every kernel is centred (padding k // 2), so start stays 0.5; r grows by (k - 1) x jump at each depthwise
    conv."""
    rows = table(NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=224)))
    assert [(r.name, r.shape, r.size, r.jump, r.start) for r in rows] == [
        ("stem", (32, 112, 112), 3, 2, 0.5),
        ("stage1", (16, 112, 112), 7, 2, 0.5),  # 3 + 2 x 2
        ("stage2", (24, 56, 56), 19, 4, 0.5),  # 7 + 2 x 2 = 11 (stride 2), 11 + 2 x 4
        ("stage3", (40, 28, 28), 67, 8, 0.5),  # 19 + 4 x 4 = 35, 35 + 4 x 8
        ("stage4", (80, 14, 14), 147, 16, 0.5),  # 67 + 2 x 8 = 83, + 2 x 16 twice
        ("stage5", (112, 14, 14), 339, 16, 0.5),  # 147 + 3 x (4 x 16)
        ("stage6", (192, 7, 7), 787, 32, 0.5),  # 339 + 4 x 16 = 403, + 3 x (4 x 32)
        ("stage7", (320, 7, 7), 851, 32, 0.5),  # 787 + 2 x 32
        ("head", (1280, 7, 7), 851, 32, 0.5),  # 1x1
    ]
