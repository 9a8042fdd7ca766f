"""ReLU6, residual add, inference batch-norm and gradients through the batch-norm fold, in NumPy, against PyTorch
(forward and autograd) and finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model.numpy_layers import (
    batchnorm_backward,
    batchnorm_fold,
    batchnorm_fold_backward,
    batchnorm_forward,
    relu6_backward,
    relu6_forward,
    residual_add_backward,
    residual_add_forward,
)
from tests.finite_differences import numeric_grad

PROPERTY = settings(max_examples=40, deadline=None)
SHAPES = st.lists(st.integers(1, 4), min_size=4, max_size=4).map(tuple)


@PROPERTY
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_relu6_matches_torch_at_and_around_both_kinks(shape: tuple[int, ...], seed: int) -> None:
    """Values on a 0.5 grid from -2 to 8, so exactly 0 and exactly 6 occur: PyTorch passes no gradient there."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-4, 17, shape).astype(np.float64) / 2
    out, cache = relu6_forward(x)
    xt = torch.tensor(x, requires_grad=True)
    ref = F.relu6(xt)
    dout = rng.standard_normal(shape)
    ref.backward(torch.tensor(dout))
    np.testing.assert_array_equal(out, ref.detach().numpy())
    np.testing.assert_array_equal(relu6_backward(dout, cache), xt.grad.numpy())
    out32, _ = relu6_forward(x.astype(np.float32))
    np.testing.assert_allclose(out32, F.relu6(torch.tensor(x.astype(np.float32))).numpy(), rtol=1e-5, atol=1e-5)
    assert out32.dtype == np.float32


@PROPERTY
@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_residual_add_matches_torch(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, skip, dout = (rng.standard_normal(shape) for _ in range(3))
    out, cache = residual_add_forward(x, skip)
    xt, st_ = torch.tensor(x, requires_grad=True), torch.tensor(skip, requires_grad=True)
    ref = xt + st_
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    dx, dskip = residual_add_backward(dout, cache)
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    np.testing.assert_array_equal(dskip, st_.grad.numpy())
    dskip[...] = 0  # the two gradients are separate arrays: writing one leaves the other alone
    np.testing.assert_array_equal(dx, dout)


@PROPERTY
@given(shape=SHAPES, eps=st.sampled_from([1e-5, 1e-3, 0.1]), seed=st.integers(0, 2**31 - 1))
def test_batchnorm_inference_matches_torch_eval(shape: tuple[int, ...], eps: float, seed: int) -> None:
    """Random statistics and affine parameters; float32 forward at 1e-5, float64 gradients from autograd."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * 3
    gamma, beta = rng.uniform(-2, 2, c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.uniform(1e-3, 3, c)
    out32, _ = batchnorm_forward(*(a.astype(np.float32) for a in (x, gamma, beta, mean, var)), eps=eps)
    ref32 = F.batch_norm(
        *(torch.tensor(a.astype(np.float32)) for a in (x, mean, var, gamma, beta)), training=False, eps=eps
    )
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref32.numpy(), rtol=1e-5, atol=1e-5)

    out, cache = batchnorm_forward(x, gamma, beta, mean, var, eps=eps)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ref = F.batch_norm(xt, torch.tensor(mean), torch.tensor(var), gt, bt, training=False, eps=eps)
    dout = rng.standard_normal(shape)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(batchnorm_backward(dout, cache), (xt, gt, bt), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_eps_is_the_layers_own() -> None:
    """With var = 0 the output is ``x / sqrt(eps)``: 1e-3 (EfficientNet-Lite) and 1e-5 give different maps."""
    x = np.full((1, 1, 1, 1), 0.5)
    one, zero = np.ones(1), np.zeros(1)
    assert batchnorm_forward(x, one, zero, zero, zero, eps=1e-3)[0].item() == pytest.approx(0.5 / np.sqrt(1e-3))
    assert batchnorm_forward(x, one, zero, zero, zero, eps=1e-5)[0].item() == pytest.approx(0.5 / np.sqrt(1e-5))


def test_backward_passes_match_finite_differences() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 7, (2, 3, 4, 3))
    x[np.abs(x) < 0.01] += 0.1  # keep clear of the kinks, where the central difference straddles them
    x[np.abs(x - 6) < 0.01] += 0.1
    dout = rng.standard_normal(x.shape)
    numeric = numeric_grad(lambda: float((relu6_forward(x)[0] * dout).sum()), x)
    np.testing.assert_allclose(relu6_backward(dout, relu6_forward(x)[1]), numeric, rtol=1e-6, atol=1e-8)

    skip = rng.standard_normal(x.shape)
    grads = residual_add_backward(dout, residual_add_forward(x, skip)[1])
    for arr, grad in zip((x, skip), grads, strict=True):
        numeric = numeric_grad(lambda: float((residual_add_forward(x, skip)[0] * dout).sum()), arr)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)

    gamma, beta, mean, var = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3), rng.random(3)
    grads = batchnorm_backward(dout, batchnorm_forward(x, gamma, beta, mean, var, 1e-3)[1])
    for arr, grad in zip((x, gamma, beta), grads, strict=True):
        numeric = numeric_grad(lambda: float((batchnorm_forward(x, gamma, beta, mean, var, 1e-3)[0] * dout).sum()), arr)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@PROPERTY
@given(groups=st.sampled_from([1, 3]), eps=st.sampled_from([1e-5, 1e-3]), seed=st.integers(0, 2**31 - 1))
def test_gradients_through_the_fold_match_autograd_of_conv_then_batchnorm(groups: int, eps: float, seed: int) -> None:
    """The folded convolution's gradients, taken back through the fold, are the checkpoint parameters' gradients:
    autograd of ``batch_norm(conv2d(x, w))`` in eval mode, plain and depthwise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((3, 3 // groups, 3, 3))
    gamma, beta, mean, var = rng.uniform(0.5, 2, 3), rng.standard_normal(3), rng.standard_normal(3), rng.random(3)
    w_f, b_f = batchnorm_fold(w, gamma, beta, mean, var, eps)
    out = F.conv2d(torch.tensor(x), torch.tensor(w_f), torch.tensor(b_f), padding=1, groups=groups)
    dout = rng.standard_normal(tuple(out.shape))
    wf_t, bf_t = torch.tensor(w_f, requires_grad=True), torch.tensor(b_f, requires_grad=True)
    F.conv2d(torch.tensor(x), wf_t, bf_t, padding=1, groups=groups).backward(torch.tensor(dout))
    ours = batchnorm_fold_backward(wf_t.grad.numpy(), bf_t.grad.numpy(), w, gamma, mean, var, eps)

    wt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (w, gamma, beta))
    conv = F.conv2d(torch.tensor(x), wt, None, padding=1, groups=groups)
    ref = F.batch_norm(conv, torch.tensor(mean), torch.tensor(var), gt, bt, training=False, eps=eps)
    ref.backward(torch.tensor(dout))
    for mine, theirs in zip(ours, (wt, gt, bt), strict=True):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: relu6_backward(np.zeros((1, 2)), relu6_forward(np.zeros((2, 1)))[1]), r"\(1, 2\).*\(2, 1\)"),
        (
            lambda: residual_add_forward(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 1, 1))),
            r"\(1, 2, 3, 3\).*\(1, 2, 1, 1\)",
        ),
        (lambda: residual_add_backward(np.zeros((1, 2)), residual_add_forward(np.zeros(3), np.zeros(3))[1]), r"\(3,\)"),
        (
            lambda: batchnorm_forward(np.zeros((1, 3, 2, 2)), *(np.zeros(2),) * 4),
            r"gamma shape \(2,\) does not match x shape \(1, 3, 2, 2\)",
        ),
        (lambda: batchnorm_forward(np.zeros((3, 2)), *(np.zeros(2),) * 4), r"\(N, C, H, W\), got shape \(3, 2\)"),
        (
            lambda: batchnorm_fold_backward(
                np.zeros((2, 1, 3, 3)), np.zeros(2), np.zeros((2, 3, 3, 3)), *(np.ones(2),) * 3
            ),
            r"folded gradients \(2, 1, 3, 3\), \(2,\) do not match conv weight \(2, 3, 3, 3\)",
        ),
        (
            lambda: batchnorm_backward(
                np.zeros((1, 3, 2, 1)), batchnorm_forward(np.zeros((1, 3, 2, 2)), *(np.ones(3),) * 4)[1]
            ),
            r"dout shape \(1, 3, 2, 1\) does not match batch-norm shape \(1, 3, 2, 2\)",
        ),
    ],
    ids=["relu6-dout", "residual-shapes", "residual-dout", "bn-params", "bn-ndim", "fold-grads", "bn-dout"],
)
def test_wrong_shapes_are_refused_naming_them(call: Callable[[], object], message: str) -> None:
    """A residual of mismatched shapes would otherwise broadcast silently."""
    with pytest.raises(ValueError, match=message):
        call()
