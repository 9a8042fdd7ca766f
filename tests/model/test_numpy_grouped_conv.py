"""Grouped, depthwise and pointwise (1x1) convolution in NumPy against PyTorch (forward and autograd) and finite
differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model.numpy_ops import conv2d_backward, conv2d_forward
from tests.finite_differences import numeric_grad

PROPERTY = settings(max_examples=60, deadline=None)


def _torch_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, case: dict) -> torch.Tensor:
    top, bottom, left, right = case["pads"]
    xp = F.pad(x, (left, right, top, bottom))
    return F.conv2d(xp, w, b, stride=case["stride"], dilation=case["dilation"], groups=case["groups"])


@st.composite
def grouped_cases(draw: st.DrawFn) -> dict:
    """Groups 1-4 with 1-2 input and 1-3 output channels per group: depthwise (one input channel per group, with
    and without a channel multiplier), grouped and plain; kernels 1, 3 and 5 as EfficientNet-Lite uses, non-square
    ones too."""
    groups, per_in, per_out = draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh, kw = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 2, 3, 5]))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    assume(h + pads[0] + pads[1] >= dilation * (kh - 1) + 1 and w + pads[2] + pads[3] >= dilation * (kw - 1) + 1)
    return dict(
        shape=(n, groups * per_in, h, w),
        wshape=(groups * per_out, per_in, kh, kw),
        groups=groups,
        stride=stride,
        dilation=dilation,
        padding=pads if draw(st.booleans()) or len(set(pads)) > 1 else pads[0],
        pads=pads,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@PROPERTY
@given(grouped_cases())
def test_grouped_conv_forward_and_backward_match_torch(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    w = rng.standard_normal(case["wshape"])
    b = rng.standard_normal(case["wshape"][0]) if case["bias"] else None
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    b32 = None if b is None else b.astype(np.float32)
    out32, _ = conv2d_forward(x32, w32, b32, **geometry)
    ref32 = _torch_conv(torch.tensor(x32), torch.tensor(w32), None if b32 is None else torch.tensor(b32), case)
    assert out32.dtype == np.float32 and out32.shape == tuple(ref32.shape)
    np.testing.assert_allclose(out32, ref32.numpy(), rtol=1e-5, atol=1e-5)

    out, cache = conv2d_forward(x, w, b, **geometry)
    dout = rng.standard_normal(out.shape)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    ref = _torch_conv(xt, wt, bt, case)
    ref.backward(torch.tensor(dout))
    dx, dw, db = conv2d_backward(dout, cache)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert dx.shape == x.shape and dw.shape == w.shape
    if bt is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("channels", "filters", "groups", "kernel", "stride", "padding"),
    [
        (6, 6, 6, 3, 1, 1),  # depthwise 3x3, as in EfficientNet-Lite's stride-1 blocks
        (6, 6, 6, 5, 2, 2),  # depthwise 5x5 stride 2
        (4, 8, 4, 3, 2, (0, 1, 0, 1)),  # depthwise with multiplier 2 and TensorFlow-style "same" padding
        (6, 4, 2, 3, 1, 1),  # grouped: 3 input channels and 2 filters per group
        (5, 7, 1, 1, 1, 0),  # pointwise (1x1)
        (5, 7, 1, 1, 2, 0),  # pointwise with stride
        (4, 6, 2, 1, 1, 0),  # grouped pointwise
    ],
    ids=["dw3", "dw5-s2", "dw-mult-same", "grouped3", "pw", "pw-s2", "grouped-pw"],
)
def test_backward_matches_finite_differences(
    channels: int, filters: int, groups: int, kernel: int, stride: int, padding: int | tuple[int, int, int, int]
) -> None:
    """dx, dw and db against central differences of ``sum(forward * dout)`` on a tiny float64 input."""
    rng = np.random.default_rng(channels * 100 + filters * 10 + groups)
    x = rng.standard_normal((2, channels, 5, 6))
    w = rng.standard_normal((filters, channels // groups, kernel, kernel))
    b = rng.standard_normal(filters)
    geometry = dict(stride=stride, padding=padding, groups=groups)
    out, cache = conv2d_forward(x, w, b, **geometry)
    dout = rng.standard_normal(out.shape)
    analytic = conv2d_backward(dout, cache)
    for arr, grad in zip((x, w, b), analytic, strict=True):
        numeric = numeric_grad(lambda: float((conv2d_forward(x, w, b, **geometry)[0] * dout).sum()), arr)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_depthwise_is_one_filter_per_channel_by_hand() -> None:
    """Channel 0 summed by a ones kernel, channel 1 negated by a centre tap: the channels never mix."""
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[0] = 1
    w[1, 0, 1, 1] = -1
    out, _ = conv2d_forward(x, w, None, padding=1, groups=2)
    assert out[0, 0, 1, 1] == x[0, 0].sum() and out[0, 0, 0, 0] == x[0, 0, :2, :2].sum()
    np.testing.assert_array_equal(out[0, 1], -x[0, 1])


def test_pointwise_convolution_reads_the_input_without_an_im2col_copy() -> None:
    """A stride-1 unpadded 1x1 convolution contracts the input in place: the cache's tap is the input itself."""
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 4)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 8, 1, 1)).astype(np.float32)
    out, cache = conv2d_forward(x, w, None)
    assert np.shares_memory(cache.tap(0, 0).reshape(2, 8, 20), x)
    np.testing.assert_allclose(out, np.einsum("fc,nchw->nfhw", w[:, :, 0, 0], x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "groups", "message"),
    [
        ((1, 6, 5, 5), (6, 1, 3, 3), 4, r"groups=4 must be >= 1 and divide both x channels \(x shape \(1, 6, 5, 5\)\)"),
        ((1, 6, 5, 5), (5, 2, 3, 3), 3, r"w filters \(w shape \(5, 2, 3, 3\)\)"),
        ((1, 6, 5, 5), (6, 2, 3, 3), 6, r"x channels 6 \(x shape \(1, 6, 5, 5\)\) != w input channels x groups"),
        ((1, 6, 5, 5), (6, 1, 3, 3), 0, r"groups=0 must be >= 1"),
    ],
    ids=["groups-vs-channels", "groups-vs-filters", "per-group-channels", "zero-groups"],
)
def test_inconsistent_groups_are_refused_naming_the_shapes(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        conv2d_forward(np.zeros(x_shape), np.zeros(w_shape), None, padding=1, groups=groups)


def test_grouped_backward_refuses_a_wrong_dout_and_keeps_float32() -> None:
    x = np.ones((1, 4, 6, 6), np.float32)
    out, cache = conv2d_forward(x, np.ones((4, 1, 3, 3), np.float32), None, stride=2, padding=1, groups=4)
    assert out.shape == (1, 4, 3, 3)
    assert all(g.dtype == np.float32 for g in conv2d_backward(out, cache))
    with pytest.raises(ValueError, match=r"dout shape \(1, 4, 6, 6\) does not match conv output shape \(1, 4, 3, 3\)"):
        conv2d_backward(x, cache)
