"""Spatial NumPy layers (2-D convolution, plain, grouped or depthwise, and max-pooling), forward and backward side
by side.

Every ``*_forward`` returns ``(out, cache)`` and the matching ``*_backward`` takes ``(dout, cache)``. Arrays are
``(N, C, H, W)``; the output dtype is the input dtype (float32 in, float32 out). Convolution is cross-correlation,
as in PyTorch. The padded input is viewed as overlapping windows with ``numpy.lib.stride_tricks.sliding_window_view``
(no copy) and contracted three ways:

- ``groups == 1``, ``k x k`` kernel: im2col, the windows against the kernel in one matrix product;
- ``groups == 1``, ``1 x 1`` kernel (a pointwise convolution): one batched ``(F, C) @ (C, H*W)`` product on the
  (strided) input itself, no im2col copy;
- ``groups > 1`` (grouped; ``groups == C`` is depthwise): one step per kernel offset, each a batched product per
  group (an elementwise product for depthwise), on the strided input. Materialising depthwise im2col windows
  would cost ``KH*KW`` times the input's memory for ``KH*KW`` multiply-adds per output.

Arithmetic runs in the inputs' dtype: float32 accumulation meets the 1e-5 export-parity rule on the scratch network
and stays within float32's own error on EfficientNet-Lite0 (``export.parity``), and float64 inputs give float64
gradients for finite-difference checks. The only Python loops run over kernel offsets (col2im, the grouped
products and the max-pool gradient scatter), never over pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Padding = int | tuple[int, int, int, int]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis: ``floor((size + padding - dilation * (kernel - 1) - 1) / stride) + 1``.

    ``padding`` is the total padding along the axis (``2 * P`` for symmetric padding ``P``). Raises ValueError
    when the dilated kernel does not fit or an argument is out of range.
    """
    if kernel < 1 or stride < 1 or dilation < 1 or padding < 0 or size < 1:
        raise ValueError(
            f"need size >= 1, kernel >= 1, stride >= 1, dilation >= 1, padding >= 0; got size={size} "
            f"kernel={kernel} stride={stride} padding={padding} dilation={dilation}"
        )
    span = dilation * (kernel - 1) + 1
    if size + padding < span:
        raise ValueError(f"dilated kernel span {span} exceeds padded length {size + padding} (size {size})")
    return (size + padding - span) // stride + 1


def normalize_padding(padding: Padding) -> tuple[int, int, int, int]:
    """``P`` or ``(top, bottom, left, right)`` -> ``(top, bottom, left, right)``, all non-negative ints."""
    pads = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    if len(pads) != 4 or any(int(p) != p or p < 0 for p in pads):
        raise ValueError(f"padding must be an int or (top, bottom, left, right) of non-negative ints, got {padding}")
    return tuple(int(p) for p in pads)  # type: ignore[return-value]


def _check_4d(name: str, arr: np.ndarray) -> None:
    if arr.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {arr.shape}")


@dataclass(frozen=True)
class ConvCache:
    """What ``conv2d_backward`` needs: the windows ``(N, OH, OW, C, KH, KW)`` (a view of the padded input), the
    kernel and the geometry."""

    windows: np.ndarray
    w: np.ndarray
    x_shape: tuple[int, int, int, int]
    stride: int
    padding: tuple[int, int, int, int]
    dilation: int
    groups: int = 1

    def tap(self, i: int, j: int) -> np.ndarray:
        """The padded input under kernel offset ``(i, j)`` at every output cell: a ``(N, C, OH, OW)`` view."""
        return self.windows[..., i, j].transpose(0, 3, 1, 2)


def _windows(xp: np.ndarray, kh: int, kw: int, stride: int, dilation: int) -> np.ndarray:
    """Strided view ``(N, OH, OW, C, KH, KW)`` of the padded input ``xp`` ``(N, C, Hp, Wp)``; no copy."""
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    view = sliding_window_view(xp, (span_h, span_w), axis=(2, 3))  # (N, C, Hp-span+1, Wp-span+1, span_h, span_w)
    view = view[:, :, ::stride, ::stride, ::dilation, ::dilation]
    return view.transpose(0, 2, 3, 1, 4, 5)


def _check_conv_shapes(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, groups: int) -> None:
    _check_4d("x", x)
    _check_4d("w", w)
    c, f = x.shape[1], w.shape[0]
    if groups < 1 or c % groups or f % groups:
        raise ValueError(
            f"groups={groups} must be >= 1 and divide both x channels (x shape {x.shape}) and w filters "
            f"(w shape {w.shape})"
        )
    if w.shape[1] * groups != c:
        raise ValueError(
            f"x channels {c} (x shape {x.shape}) != w input channels x groups (w shape {w.shape}, groups {groups})"
        )
    if b is not None and b.shape != (f,):
        raise ValueError(f"bias shape {b.shape} does not match w shape {w.shape}; expected ({f},)")


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: int = 1,
    padding: Padding = 0,
    dilation: int = 1,
    groups: int = 1,
) -> tuple[np.ndarray, ConvCache]:
    """2-D cross-correlation: ``x (N, C, H, W)``, ``w (F, C / groups, KH, KW)``, ``b (F,)`` or None ->
    ``(N, F, OH, OW)``.

    ``padding`` is zero padding, either ``P`` on every side or ``(top, bottom, left, right)``;
    ``OH = floor((H + top + bottom - dilation * (KH - 1) - 1) / stride) + 1`` (likewise ``OW``). With ``groups``
    ``G``, input channels ``[g C/G, (g+1) C/G)`` feed only filters ``[g F/G, (g+1) F/G)``; ``G == C`` is a
    depthwise convolution (``w (C * multiplier, 1, KH, KW)``), as ``torch.nn.functional.conv2d``.
    """
    _check_conv_shapes(x, w, b, groups)
    top, bottom, left, right = pads = normalize_padding(padding)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    try:
        oh = conv_output_size(h, kh, stride, top + bottom, dilation)
        ow = conv_output_size(wd, kw, stride, left + right, dilation)
    except ValueError as exc:
        raise ValueError(f"convolution w {w.shape} cannot run over x {x.shape} (padding {pads}): {exc}") from exc
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(pads) else x
    cache = ConvCache(
        _windows(xp, kh, kw, stride, dilation)[:, :oh, :ow], w, (n, c, h, wd), stride, pads, dilation, groups
    )
    dtype = np.result_type(x.dtype, w.dtype)
    wd_ = w.astype(dtype, copy=False)
    if groups > 1:
        out = _grouped_forward(cache, wd_, dtype)
    elif kh == kw == 1:
        taps = cache.tap(0, 0).reshape(n, c, oh * ow)  # a copy only when strided
        out = np.matmul(wd_.reshape(f, c), taps.astype(dtype, copy=False)).reshape(n, f, oh, ow)
    else:
        cols = cache.windows.reshape(n * oh * ow, c * kh * kw).astype(dtype, copy=False)
        out = (cols @ wd_.reshape(f, -1).T).reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    if b is not None:
        out += b.astype(dtype, copy=False)[:, None, None]
    return np.ascontiguousarray(out), cache


def _grouped_forward(cache: ConvCache, w: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``groups > 1``: accumulate, per kernel offset, ``w[g, :, :, i, j] @ x_tap[g]`` for every group ``g``."""
    n, oh, ow, c, kh, kw = cache.windows.shape
    g, f = cache.groups, w.shape[0]
    wg = w.reshape(g, f // g, c // g, kh, kw)
    out = np.zeros((n, g, f // g, oh, ow), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            tap = cache.tap(i, j).reshape(n, g, c // g, oh, ow)
            if c == g:  # depthwise: one input channel per group, an elementwise product
                out += tap * wg[None, :, :, 0, i, j, None, None]
            else:
                out += np.einsum("gfc,ngchw->ngfhw", wg[:, :, :, i, j], tap, optimize=True)
    return out.reshape(n, f, oh, ow)


def conv2d_backward(dout: np.ndarray, cache: ConvCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv2d_forward``: ``dout (N, F, OH, OW)`` -> ``(dx (N, C, H, W), dw (F, C / groups, KH, KW),
    db (F,))``.

    ``dx`` is the col2im scatter of the transposed convolution, ``dw`` correlates ``dout`` with the input windows
    and ``db`` sums ``dout`` over batch and space; grouped convolutions do both per group and kernel offset.
    """
    windows, w = cache.windows, cache.w
    n, oh, ow, c, kh, kw = windows.shape
    f = w.shape[0]
    if dout.shape != (n, f, oh, ow):
        raise ValueError(f"dout shape {dout.shape} does not match conv output shape {(n, f, oh, ow)}")
    dtype = np.result_type(dout.dtype, w.dtype)
    dout = dout.astype(dtype, copy=False)
    wd_ = w.astype(dtype, copy=False)
    db = dout.sum(axis=(0, 2, 3))
    top, bottom, left, right = cache.padding
    _, _, h, wd = cache.x_shape
    s, d = cache.stride, cache.dilation
    dxp = np.zeros((n, c, h + top + bottom, wd + left + right), dtype=dtype)

    def scatter(i: int, j: int, grad: np.ndarray) -> None:
        dxp[:, :, i * d : i * d + s * (oh - 1) + 1 : s, j * d : j * d + s * (ow - 1) + 1 : s] += grad

    if cache.groups > 1:
        dw = _grouped_backward(dout, cache, wd_, scatter)
    elif kh == kw == 1:
        dflat = dout.reshape(n, f, oh * ow)
        taps = cache.tap(0, 0).reshape(n, c, oh * ow).astype(dtype, copy=False)
        dw = np.matmul(dflat, taps.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
        scatter(0, 0, np.matmul(wd_.reshape(f, c).T, dflat).reshape(n, c, oh, ow))
    else:
        dmat = dout.transpose(0, 2, 3, 1).reshape(n * oh * ow, f)
        cols = windows.reshape(n * oh * ow, c * kh * kw).astype(dtype, copy=False)
        dw = (dmat.T @ cols).reshape(w.shape)
        dcols = (dmat @ wd_.reshape(f, -1)).reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)
        for i in range(kh):
            for j in range(kw):
                scatter(i, j, dcols[..., i, j])
    return np.ascontiguousarray(dxp[:, :, top : top + h, left : left + wd]), dw, db


def _grouped_backward(
    dout: np.ndarray, cache: ConvCache, w: np.ndarray, scatter: Callable[[int, int, np.ndarray], None]
) -> np.ndarray:
    """``groups > 1``: per kernel offset, ``dw`` correlates each group's ``dout`` with its input tap and the tap's
    gradient ``w[g, :, :, i, j].T @ dout[g]`` is scattered back; returns ``dw (F, C / groups, KH, KW)``."""
    n, oh, ow, c, kh, kw = cache.windows.shape
    g, f = cache.groups, w.shape[0]
    wg = w.reshape(g, f // g, c // g, kh, kw)
    dg = dout.reshape(n, g, f // g, oh, ow)
    dw = np.empty((g, f // g, c // g, kh, kw), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = cache.tap(i, j).reshape(n, g, c // g, oh, ow).astype(dout.dtype, copy=False)
            if c == g:  # depthwise
                dw[:, :, 0, i, j] = np.einsum("ngfhw,nghw->gf", dg, tap[:, :, 0])  # one pass, no BLAS to win
                dtap = (dg * wg[None, :, :, 0, i, j, None, None]).sum(axis=2)
            else:
                dw[..., i, j] = np.einsum("ngfhw,ngchw->gfc", dg, tap, optimize=True)
                dtap = np.einsum("gfc,ngfhw->ngchw", wg[:, :, :, i, j], dg, optimize=True)
            scatter(i, j, dtap.reshape(n, c, oh, ow))
    return dw.reshape(w.shape)


@dataclass(frozen=True)
class PoolCache:
    """What ``maxpool2d_backward`` needs: the flat in-window argmax ``(N, C, OH, OW)`` and the geometry."""

    argmax: np.ndarray
    x_shape: tuple[int, int, int, int]
    kernel: int
    stride: int


def maxpool2d_forward(x: np.ndarray, kernel: int = 2, stride: int = 2) -> tuple[np.ndarray, PoolCache]:
    """Max over ``kernel x kernel`` windows (no padding, floor mode): ``(N, C, H, W)`` -> ``(N, C, OH, OW)``.

    Ties: the winner of a window is its *first* maximal element in row-major window order (top row first, left
    to right), which is what ``numpy.argmax`` returns and what PyTorch's CPU kernel picks. Only that element
    receives the window's gradient in ``maxpool2d_backward``.
    """
    _check_4d("x", x)
    n, c, h, w = x.shape
    try:
        oh = conv_output_size(h, kernel, stride)
        ow = conv_output_size(w, kernel, stride)
    except ValueError as exc:
        raise ValueError(f"max-pool kernel {kernel} stride {stride} cannot run over x {x.shape}: {exc}") from exc
    windows = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    flat = windows.reshape(n, c, oh, ow, kernel * kernel)
    argmax = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(out), PoolCache(argmax, (n, c, h, w), kernel, stride)


def maxpool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Route each ``dout (N, C, OH, OW)`` value to its window's argmax; returns ``dx (N, C, H, W)``.

    Overlapping windows (``stride < kernel``) accumulate into shared input cells.
    """
    if dout.shape != cache.argmax.shape:
        raise ValueError(f"dout shape {dout.shape} does not match pool output shape {cache.argmax.shape}")
    k, s = cache.kernel, cache.stride
    _, _, oh, ow = dout.shape
    dx = np.zeros(cache.x_shape, dtype=dout.dtype)
    for offset in range(k * k):
        i, j = divmod(offset, k)
        routed = np.where(cache.argmax == offset, dout, 0)
        dx[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s] += routed
    return dx
