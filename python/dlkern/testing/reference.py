"""Plain float64 NumPy references, written for clarity rather than speed.

Each function takes arrays of any float dtype, computes in float64 and
returns float64. Tests compare dlkern's results with these (and with torch /
scikit-learn where installed).
"""

from __future__ import annotations

import numpy as np


def as64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array or a CPU torch tensor (any dtype)."""
    if hasattr(x, "detach"):  # torch: bfloat16 has no NumPy dtype, so go through float64
        return x.detach().to(dtype=__import__("torch").float64).cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def matmul(a, b) -> np.ndarray:
    """a @ b for 2-D or batched 3-D arrays: C[..., i, j] = sum_p A[..., i, p] B[..., p, j]."""
    a, b = as64(a), as64(b)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    out = np.zeros(a.shape[:-2] + (m, n))
    for p in range(k):
        out += a[..., :, p, None] * b[..., None, p, :]
    return out


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """Windows along one axis (torch's rule: with ceil_mode, a last window that
    would start in the right padding is dropped)."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _taps(o, size, kernel, stride, pad, dilation):
    """In-input positions of the window of output o along one axis."""
    return [o * stride - pad + i * dilation for i in range(kernel)
            if 0 <= o * stride - pad + i * dilation < size]


def _first_tap(o, stride, pad, dilation):
    """torch's first tap of a window: its start moved right past the padding
    in steps of the dilation (it may lie past the input when every tap misses)."""
    start = o * stride - pad
    while start < 0:
        start += dilation
    return start


def max_pool2d(x, kernel, stride, pad, dilation, ceil_mode):
    """(out, indices) for x of shape (N, C, H, W); all arguments are pairs.

    The maximum over each window's in-input taps, scanned row by row; a
    larger value or a NaN replaces the current one, so ties keep the first
    and NaNs win (the last one). An all -inf window keeps its first tap. With
    dilation, a window can miss the input entirely: its value is -inf and its
    index torch's (computed from the first tap, which lies past the input).
    """
    x = as64(x)
    n, c, h, w = x.shape
    oh_n = pool_output_size(h, kernel[0], stride[0], pad[0], dilation[0], ceil_mode)
    ow_n = pool_output_size(w, kernel[1], stride[1], pad[1], dilation[1], ceil_mode)
    out = np.empty((n, c, oh_n, ow_n))
    idx = np.empty((n, c, oh_n, ow_n), dtype=np.int64)
    for oh in range(oh_n):
        rows = _taps(oh, h, kernel[0], stride[0], pad[0], dilation[0])
        for ow in range(ow_n):
            cols = _taps(ow, w, kernel[1], stride[1], pad[1], dilation[1])
            best = np.full((n, c), -np.inf)
            first = (_first_tap(oh, stride[0], pad[0], dilation[0]) * w
                     + _first_tap(ow, stride[1], pad[1], dilation[1]))
            best_idx = np.full((n, c), first)
            for ih in rows:
                for iw in cols:
                    v = x[:, :, ih, iw]
                    take = (v > best) | np.isnan(v)
                    best = np.where(take, v, best)
                    best_idx = np.where(take, ih * w + iw, best_idx)
            out[:, :, oh, ow] = best
            idx[:, :, oh, ow] = best_idx
    return out, idx


def avg_pool_divisor(oh, ow, h, w, kernel, stride, pad, count_include_pad, divisor_override):
    """torch's divisor: the override; else the window clipped to the padded
    input (count_include_pad) or to the input itself."""
    if divisor_override:
        return divisor_override
    h0, w0 = oh * stride[0] - pad[0], ow * stride[1] - pad[1]
    h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
    if count_include_pad:
        return (h1 - h0) * (w1 - w0)
    return (min(h1, h) - max(h0, 0)) * (min(w1, w) - max(w0, 0))


def avg_pool2d(x, kernel, stride, pad, ceil_mode, count_include_pad, divisor_override):
    x = as64(x)
    n, c, h, w = x.shape
    oh_n = pool_output_size(h, kernel[0], stride[0], pad[0], 1, ceil_mode)
    ow_n = pool_output_size(w, kernel[1], stride[1], pad[1], 1, ceil_mode)
    out = np.empty((n, c, oh_n, ow_n))
    for oh in range(oh_n):
        rows = _taps(oh, h, kernel[0], stride[0], pad[0], 1)
        for ow in range(ow_n):
            cols = _taps(ow, w, kernel[1], stride[1], pad[1], 1)
            total = x[:, :, rows][:, :, :, cols].sum(axis=(2, 3))
            out[:, :, oh, ow] = total / avg_pool_divisor(
                oh, ow, h, w, kernel, stride, pad, count_include_pad, divisor_override)
    return out


def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, pad, dilation):
    """Each input element gets the sum of the gradients of the outputs it was
    the maximum of. Outputs whose window misses the input are constants (-inf)
    and pass no gradient on."""
    g, idx = as64(grad_out), np.asarray(indices)
    n, c, h, w = input_shape
    grad = np.zeros((n, c, h * w))
    for oh in range(g.shape[2]):
        if not _taps(oh, h, kernel[0], stride[0], pad[0], dilation[0]):
            continue
        for ow in range(g.shape[3]):
            if not _taps(ow, w, kernel[1], stride[1], pad[1], dilation[1]):
                continue
            for i in range(n):
                for j in range(c):
                    grad[i, j, idx[i, j, oh, ow]] += g[i, j, oh, ow]
    return grad.reshape(input_shape)


def avg_pool2d_backward(grad_out, input_shape, kernel, stride, pad, count_include_pad,
                        divisor_override):
    """Each output's gradient spread evenly (by the forward's divisor) over its in-input taps."""
    g = as64(grad_out)
    n, c, h, w = input_shape
    grad = np.zeros(input_shape)
    for oh in range(g.shape[2]):
        rows = _taps(oh, h, kernel[0], stride[0], pad[0], 1)
        for ow in range(g.shape[3]):
            cols = _taps(ow, w, kernel[1], stride[1], pad[1], 1)
            d = avg_pool_divisor(oh, ow, h, w, kernel, stride, pad, count_include_pad,
                                 divisor_override)
            for ih in rows:
                for iw in cols:
                    grad[:, :, ih, iw] += g[:, :, oh, ow] / d
    return grad


def _conv_taps(x_shape, params):
    """For each kernel tap (i, j): the (rows, cols) slices of the padded input it reads."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = params
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def conv2d_padding(x_shape, w_shape, padding, dilation):
    """(top, bottom, left, right) for torch's padding argument ('same' puts the odd one last)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dilation[0] * (w_shape[2] - 1), dilation[1] * (w_shape[3] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    return padding[0], padding[0], padding[1], padding[1]


def conv2d(x, w, b, stride, padding, dilation, groups):
    """Cross-correlation of x (N, C, H, W) with w (K, C / groups, kh, kw), in float64.

    out[n, k, p, q] = b[k] + sum over c in k's group, taps (i, j) of
    w[k, c, i, j] * xpad[n, c, p * sh + i * dh, q * sw + j * dw].
    """
    x, w = as64(x), as64(w)
    top, bottom, left, right = conv2d_padding(x.shape, w.shape, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    k, cg = w.shape[0], w.shape[1]
    kg = k // groups
    out = np.zeros((x.shape[0], k, oh, ow))
    for i, j, (rows, cols) in _conv_taps(x.shape, ((kh, kw), stride, dilation, (oh, ow))):
        for g in range(groups):
            patch = xp[:, g * cg:(g + 1) * cg, rows, cols]
            out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch,
                                                     w[g * kg:(g + 1) * kg, :, i, j])
    if b is not None:
        out += as64(b)[None, :, None, None]
    return out


def conv2d_backward(grad_out, x, w, stride, padding, dilation, groups):
    """(grad_input, grad_weight, grad_bias) of conv2d, in float64: each tap's
    contribution to the forward sum, differentiated term by term."""
    g_out, x, w = as64(grad_out), as64(x), as64(w)
    top, bottom, left, right = conv2d_padding(x.shape, w.shape, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(w)
    kh, kw = w.shape[2:]
    oh, ow = g_out.shape[2:]
    k, cg = w.shape[0], w.shape[1]
    kg = k // groups
    for i, j, (rows, cols) in _conv_taps(x.shape, ((kh, kw), stride, dilation, (oh, ow))):
        for g in range(groups):
            go = g_out[:, g * kg:(g + 1) * kg]
            patch = xp[:, g * cg:(g + 1) * cg, rows, cols]
            grad_w[g * kg:(g + 1) * kg, :, i, j] += np.einsum("nkhw,nchw->kc", go, patch)
            grad_xp[:, g * cg:(g + 1) * cg, rows, cols] += np.einsum(
                "nkhw,kc->nchw", go, w[g * kg:(g + 1) * kg, :, i, j])
    grad_x = grad_xp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    return grad_x, grad_w, g_out.sum(axis=(0, 2, 3))
