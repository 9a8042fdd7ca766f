"""NumPy layers against PyTorch (forward and autograd), finite differences, and a hand-worked example."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from model.numpy_layers import (
    batchnorm_fold,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)
from model.numpy_ops import (
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    maxpool2d_backward,
    maxpool2d_forward,
)
from tests.finite_differences import numeric_grad

PROPERTY = settings(max_examples=40, deadline=None)


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    if draw(st.booleans()):
        padding: int | tuple[int, int, int, int] = draw(st.integers(0, 2))
        pads = (padding,) * 4
    else:
        pads = padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    assume(h + pads[0] + pads[1] >= dilation * (kh - 1) + 1 and w + pads[2] + pads[3] >= dilation * (kw - 1) + 1)
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(
        shape=(n, c, h, w),
        wshape=(f, c, kh, kw),
        stride=stride,
        dilation=dilation,
        padding=padding,
        pads=pads,
        bias=draw(st.booleans()),
        seed=seed,
    )


def _torch_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, case: dict) -> torch.Tensor:
    top, bottom, left, right = case["pads"]
    xp = F.pad(x, (left, right, top, bottom))
    return F.conv2d(xp, w, b, stride=case["stride"], dilation=case["dilation"])


@PROPERTY
@given(conv_cases())
def test_conv2d_forward_and_backward_match_torch(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    w = rng.standard_normal(case["wshape"])
    b = rng.standard_normal(case["wshape"][0]) if case["bias"] else None
    # float32 forward against PyTorch float32
    out32, _ = conv2d_forward(
        x.astype(np.float32),
        w.astype(np.float32),
        None if b is None else b.astype(np.float32),
        case["stride"],
        case["padding"],
        case["dilation"],
    )
    ref32 = _torch_conv(
        _t(x.astype(np.float32)), _t(w.astype(np.float32)), None if b is None else _t(b.astype(np.float32)), case
    )
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref32.numpy(), rtol=1e-5, atol=1e-5)
    # float64 backward against autograd float64
    out, cache = conv2d_forward(x, w, b, case["stride"], case["padding"], case["dilation"])
    dout = rng.standard_normal(out.shape)
    xt, wt = _t(x, True), _t(w, True)
    bt = None if b is None else _t(b, True)
    ref = _torch_conv(xt, wt, bt, case)
    ref.backward(_t(dout))
    dx, dw, db = conv2d_backward(dout, cache)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if bt is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


@PROPERTY
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_conv_output_size_matches_torch(size: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
    assume(size + 2 * padding >= dilation * (kernel - 1) + 1)
    out = F.conv2d(
        torch.zeros(1, 1, size, 1),
        torch.zeros(1, 1, kernel, 1),
        stride=(stride, 1),
        padding=(padding, 0),
        dilation=(dilation, 1),
    )
    assert conv_output_size(size, kernel, stride, 2 * padding, dilation) == out.shape[2]


@st.composite
def pool_cases(draw: st.DrawFn) -> dict:
    kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kernel, 9)), draw(st.integers(kernel, 9))
    return dict(
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w),
        kernel=kernel,
        stride=stride,
        seed=draw(st.integers(0, 2**31 - 1)),
        ties=draw(st.booleans()),
    )


@PROPERTY
@given(pool_cases())
def test_maxpool_forward_and_backward_match_torch(case: dict) -> None:
    """Random floats (no ties) or values from {0, 1, 2} (many ties): PyTorch's CPU kernel also takes the first max."""
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(0, 3, case["shape"]).astype(np.float64) if case["ties"] else rng.standard_normal(case["shape"])
    out, cache = maxpool2d_forward(x, case["kernel"], case["stride"])
    xt = _t(x, True)
    ref = F.max_pool2d(xt, case["kernel"], case["stride"])
    dout = rng.standard_normal(out.shape)
    ref.backward(_t(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_allclose(maxpool2d_backward(dout, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_maxpool_tie_goes_to_first_max_in_row_major_order() -> None:
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]], dtype=np.float32)
    out, cache = maxpool2d_forward(x)
    assert out.item() == 3.0
    dx = maxpool2d_backward(np.ones((1, 1, 1, 1), dtype=np.float32), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 1.0], [0.0, 0.0]]]])  # top row, right cell: first 3 in row-major order
    assert out.dtype == dx.dtype == np.float32


@PROPERTY
@given(shape=st.lists(st.integers(1, 4), min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_relu_and_global_avg_pool_match_torch(shape: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64) * rng.random(shape).round(1)  # includes exact zeros
    out, cache = relu_forward(x)
    xt = _t(x, True)
    ref = F.relu(xt)
    dout = rng.standard_normal(shape)
    ref.backward(_t(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(relu_backward(dout, cache), xt.grad.numpy())

    pooled, gcache = global_avg_pool_forward(x)
    xt = _t(x, True)
    gref = xt.mean(dim=(2, 3))
    dpool = rng.standard_normal(pooled.shape)
    gref.backward(_t(dpool))
    np.testing.assert_allclose(pooled, gref.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(global_avg_pool_backward(dpool, gcache), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@PROPERTY
@given(shape=st.lists(st.integers(1, 4), min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_global_max_pool_matches_torch_amax_ties_included(shape: list[int], seed: int) -> None:
    """Few distinct values, so maps often hold their maximum more than once: the gradient is shared as amax does."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64)
    pooled, cache = global_max_pool_forward(x)
    xt = _t(x, True)
    ref = xt.amax(dim=(2, 3))
    dpool = rng.standard_normal(pooled.shape)
    ref.backward(_t(dpool))
    np.testing.assert_array_equal(pooled, ref.detach().numpy())
    np.testing.assert_allclose(global_max_pool_backward(dpool, cache), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_global_max_pool_gradient_is_the_finite_difference_without_ties() -> None:
    rng = np.random.default_rng(5)
    xg = rng.standard_normal((2, 3, 4, 3))
    dg = rng.standard_normal((2, 3))
    numeric = numeric_grad(lambda: float((global_max_pool_forward(xg)[0] * dg).sum()), xg)
    np.testing.assert_allclose(global_max_pool_backward(dg, global_max_pool_forward(xg)[1]), numeric, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        global_max_pool_backward(dg[:1], global_max_pool_forward(xg)[1])


@PROPERTY
@given(n=st.integers(1, 5), d=st.integers(1, 6), k=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_linear_and_softmax_cross_entropy_match_torch(n: int, d: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, d)), rng.standard_normal((k, d)), rng.standard_normal(k)
    labels = rng.integers(0, k, n)
    logits, cache = linear_forward(x, w, b)
    loss, dlogits = softmax_cross_entropy(logits * 10, labels)  # scaled: exercises the max shift
    dx, dw, db = linear_backward(dlogits * 10, cache)
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    ref_logits = F.linear(xt, wt, bt)
    ref_loss = F.cross_entropy(ref_logits * 10, torch.tensor(labels))
    ref_loss.backward()
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-10, abs=1e-12)
    for ours, theirs in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@PROPERTY
@given(f=st.integers(1, 4), c=st.integers(1, 3), with_bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_batchnorm_fold_matches_conv_then_eval_batchnorm(f: int, c: int, with_bias: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, 6, 5))
    w, gamma, beta = rng.standard_normal((f, c, 3, 3)), rng.uniform(0.2, 2, f), rng.standard_normal(f)
    mean, var = rng.standard_normal(f), rng.uniform(0.1, 3, f)
    bias = rng.standard_normal(f) if with_bias else None
    w_f, b_f = batchnorm_fold(w, gamma, beta, mean, var, 1e-3, bias)
    ours, _ = conv2d_forward(x, w_f, b_f, 1, 1)
    conv = F.conv2d(_t(x), _t(w), None if bias is None else _t(bias), padding=1)
    ref = F.batch_norm(conv, _t(mean), _t(var), _t(gamma), _t(beta), training=False, eps=1e-3)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-10, atol=1e-10)


def test_backward_passes_match_finite_differences_in_float64() -> None:
    """Each backward against central differences of ``sum(forward(...) * dout)``, float64 throughout."""
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    geometry = dict(stride=2, padding=(1, 0, 2, 1), dilation=2)
    out, cache = conv2d_forward(x, w, b, **geometry)
    dout = rng.standard_normal(out.shape)
    analytic = conv2d_backward(dout, cache)
    for arr, grad in zip((x, w, b), analytic, strict=True):
        numeric = numeric_grad(lambda: float((conv2d_forward(x, w, b, **geometry)[0] * dout).sum()), arr)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)

    xp = rng.permutation(2 * 3 * 5 * 5).reshape(2, 3, 5, 5) / 10.0  # distinct values 0.1 apart: eps cannot flip a max
    pooled, pcache = maxpool2d_forward(xp, 3, 2)
    dpool = rng.standard_normal(pooled.shape)
    numeric = numeric_grad(lambda: float((maxpool2d_forward(xp, 3, 2)[0] * dpool).sum()), xp)
    np.testing.assert_allclose(maxpool2d_backward(dpool, pcache), numeric, rtol=1e-6, atol=1e-7)

    xl, wl, bl = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    labels = np.array([0, 1, 1])

    def loss() -> float:
        return softmax_cross_entropy(linear_forward(xl, wl, bl)[0], labels)[0]

    logits, lcache = linear_forward(xl, wl, bl)
    _, dlogits = softmax_cross_entropy(logits, labels)
    for arr, grad in zip((xl, wl, bl), linear_backward(dlogits, lcache), strict=True):
        np.testing.assert_allclose(grad, numeric_grad(loss, arr), rtol=1e-6, atol=1e-8)

    xg = rng.standard_normal((2, 3, 4, 3))
    dg = rng.standard_normal((2, 3))
    numeric = numeric_grad(lambda: float((global_avg_pool_forward(xg)[0] * dg).sum()), xg)
    np.testing.assert_allclose(global_avg_pool_backward(dg, global_avg_pool_forward(xg)[1]), numeric, rtol=1e-6)


def test_float32_in_float32_out() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    out, cache = conv2d_forward(x, w, np.zeros(2, np.float32), padding=1)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in conv2d_backward(out, cache))
    assert relu_forward(out)[0].dtype == np.float32 and global_avg_pool_forward(out)[0].dtype == np.float32
    assert softmax_cross_entropy(out[:, :, 0, 0], np.array([1]))[1].dtype == np.float32


def test_validation_errors_name_the_shapes() -> None:
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        conv2d_forward(x, np.zeros((2, 2, 3, 3), np.float32), None)
    with pytest.raises(ValueError, match="exceeds padded length"):
        conv2d_forward(x, np.zeros((2, 3, 3, 3), np.float32), None, dilation=2)
    with pytest.raises(ValueError, match="padding"):
        conv2d_forward(x, np.zeros((2, 3, 3, 3), np.float32), None, padding=(1, 1, 1))
    _, cache = conv2d_forward(x, np.zeros((2, 3, 3, 3), np.float32), None)
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\)"):
        conv2d_backward(np.zeros((1, 2, 3, 3), np.float32), cache)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        softmax_cross_entropy(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        linear_forward(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros(4))


def test_hand_worked_example_conv_relu_pool_linear() -> None:
    """The 4x4 patch, horizontal-edge kernel, ReLU, 2x2 max-pool and a 1->2 linear head, worked by hand.

    The kernel is constant along each row, so each output cell is -0.6 * (top row sum) + 1.1 * (middle row sum)
    - 0.6 * (bottom row sum) over the 3 columns under the kernel:

    (0, 0): rows 0..2, cols 0..2: sums 0.19, 1.92, 1.91 -> -0.114 + 2.112 - 1.146 = 0.852
    (0, 1): rows 0..2, cols 1..3: sums 0.21, 1.89, 1.94 -> -0.126 + 2.079 - 1.164 = 0.789
    (1, 0): rows 1..3, cols 0..2: sums 1.92, 1.91, 0.22 -> -1.152 + 2.101 - 0.132 = 0.817
    (1, 1): rows 1..3, cols 1..3: sums 1.89, 1.94, 0.21 -> -1.134 + 2.134 - 0.126 = 0.874

    ReLU keeps all four (all positive); the 2x2 max-pool gives 0.874 (cell (1, 1)); the head gives
    1.5 * 0.874 + 0.1 = 1.411 and -1.2 * 0.874 - 0.3 = -1.3488.
    """
    patch = np.array(
        [[0.05, 0.08, 0.06, 0.07], [0.12, 0.92, 0.88, 0.09], [0.08, 0.90, 0.93, 0.11], [0.06, 0.07, 0.09, 0.05]],
        dtype=np.float32,
    )[None, None]
    kernel = np.array([[-0.6, -0.6, -0.6], [1.1, 1.1, 1.1], [-0.6, -0.6, -0.6]], dtype=np.float32)[None, None]
    head_w, head_b = np.array([[1.5], [-1.2]], np.float32), np.array([0.1, -0.3], np.float32)

    conv, _ = conv2d_forward(patch, kernel, np.zeros(1, np.float32))
    act, _ = relu_forward(conv)
    pooled, _ = maxpool2d_forward(act, 2, 2)
    logits, _ = linear_forward(pooled.reshape(1, 1), head_w, head_b)

    by_hand_conv = [[0.852, 0.789], [0.817, 0.874]]
    np.testing.assert_allclose(conv[0, 0], by_hand_conv, rtol=0, atol=1e-6)
    np.testing.assert_allclose(act[0, 0], by_hand_conv, rtol=0, atol=1e-6)
    assert pooled.item() == pytest.approx(0.874, abs=1e-6)
    np.testing.assert_allclose(logits[0], [1.411, -1.3488], rtol=0, atol=1e-6)

    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 1, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(), torch.nn.Linear(1, 2)
    )
    with torch.no_grad():
        torch_model[0].weight.copy_(torch.from_numpy(kernel))
        torch_model[0].bias.zero_()
        torch_model[4].weight.copy_(torch.from_numpy(head_w))
        torch_model[4].bias.copy_(torch.from_numpy(head_b))
        torch_conv = torch_model[0](torch.from_numpy(patch))
        torch_logits = torch_model(torch.from_numpy(patch))
    np.testing.assert_allclose(conv, torch_conv.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits, torch_logits.numpy(), rtol=1e-6, atol=1e-7)


def test_cross_entropy_of_huge_logits_is_finite_and_exact() -> None:
    """log-sum-exp with the row maximum taken out first: exp(1000) overflows, the loss does not. Expected values
    from first principles: row 1 is log(1 + e^1000) - 0 ~ 1000, row 2 log(1 + e^-800) ~ 0; mean 500."""
    loss, grad = softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, 800.0]]), np.array([1, 1]))
    assert loss == pytest.approx(500.0, abs=1e-9) and np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0.5, -0.5], [0.0, 0.0]], atol=1e-12)


def test_cross_entropy_of_float32_logits_is_computed_in_float64() -> None:
    """The loss of float32 logits equals the float64 computation on the same values, not a float32 one."""
    logits = np.random.default_rng(0).standard_normal((64, 7)).astype(np.float32) * 3
    labels = np.random.default_rng(1).integers(0, 7, 64)
    z = logits.astype(np.float64)
    expected = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(64), labels]))
    loss, grad = softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(expected, rel=1e-13, abs=1e-13) and grad.dtype == np.float32


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0, -1])), r"labels must lie in \[0, 3\)"),
        (
            lambda: conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((4, 2, 3, 3)), np.zeros(1)),
            r"bias shape \(1,\) does not match w shape \(4, 2, 3, 3\)",
        ),
        (
            lambda: linear_forward(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(1)),
            r"got \(2, 3\), \(4, 3\), \(1,\)",
        ),
        (
            lambda: maxpool2d_backward(np.zeros((1, 1, 3, 2)), maxpool2d_forward(np.zeros((1, 1, 4, 6)), 2, 2)[1]),
            r"dout shape \(1, 1, 3, 2\) does not match pool output shape \(1, 1, 2, 3\)",
        ),
        (
            lambda: global_avg_pool_backward(np.zeros((1, 3)), global_avg_pool_forward(np.zeros((1, 2, 4, 4)))[1]),
            r"dout shape \(1, 3\) does not match pooled shape \(1, 2\)",
        ),
        (
            lambda: maxpool2d_forward(np.zeros((1, 2, 1, 6)), 2, 2),
            r"max-pool kernel 2 stride 2 cannot run over x \(1, 2, 1, 6\): dilated kernel span 2 exceeds",
        ),
        (
            lambda: conv2d_forward(np.zeros((1, 2, 2, 5)), np.zeros((4, 2, 3, 3)), None),
            r"convolution w \(4, 2, 3, 3\) cannot run over x \(1, 2, 2, 5\) \(padding \(0, 0, 0, 0\)\)",
        ),
    ],
    ids=["negative-label", "conv-bias", "linear-bias", "maxpool-dout", "avgpool-dout", "pool-too-big", "conv-too-big"],
)
def test_wrong_shapes_and_labels_are_refused_naming_them(call: Callable[[], object], message: str) -> None:
    """Each of these would otherwise broadcast or index silently (a label of -1 picks the last class)."""
    with pytest.raises(ValueError, match=message):
        call()
