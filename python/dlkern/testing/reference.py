"""Plain float64 NumPy references, written for clarity.

Each function takes arrays of any float dtype (NumPy, CuPy, or torch tensors
on any device), computes in float64 with NumPy and returns float64 NumPy
arrays. The tests compare dlkern's results with these (and with torch /
scikit-learn where installed), and the benchmark suite (``python -m dlkern
bench``) checks every case against them before timing it.

The benchmark's shapes are large (batches of 8 images of 56 x 56 with 64
channels, and more), so Python loops run only over what is small: kernel taps,
groups, one axis of output positions. Each step hands whole arrays to NumPy,
and contractions go through ``np.matmul`` or ``np.einsum(..., optimize=True)``,
which run on BLAS.

NumPy is the only import; torch is imported only to read a torch tensor.
"""

from __future__ import annotations

import numpy as np


def as64(x) -> np.ndarray:
    """A float64 NumPy copy of a NumPy array, a CuPy array or a torch tensor (any dtype)."""
    if hasattr(x, "detach"):  # torch: bfloat16 has no NumPy dtype, so go through float64
        return x.detach().to(dtype=__import__("torch").float64).cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def as_int64(x) -> np.ndarray:
    """An int64 NumPy array of a NumPy, CuPy or torch integer array (max pooling's indices)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy().astype(np.int64, copy=False)
    if hasattr(x, "get"):
        x = x.get()
    return np.asarray(x, dtype=np.int64)


def matmul(a, b) -> np.ndarray:
    """a @ b for 2-D or batched 3-D arrays: C[..., i, j] = sum_p A[..., i, p] B[..., p, j]."""
    return np.matmul(as64(a), as64(b))


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


def _tap_slices(kernel, stride, dilation, out_size):
    """For each kernel tap (i, j), in row-major order: the (rows, cols) slices of
    the padded input that the tap reads, one element per output position."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_size
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def _window_padding(in_size, out_size, kernel, stride, pad, dilation):
    """((top, bottom), (left, right)) that make every pooling window lie in the
    padded input: ``pad`` before, and after as much as the last window reaches
    (with ceil_mode it may reach past the padding)."""
    return tuple(
        (p, max(0, (o - 1) * s - p + d * (k - 1) + 1 - size))
        for size, o, k, s, p, d in zip(in_size, out_size, kernel, stride, pad, dilation)
    )


def _pool_output_sizes(in_size, kernel, stride, pad, dilation, ceil_mode):
    return tuple(pool_output_size(*args, ceil_mode)
                 for args in zip(in_size, kernel, stride, pad, dilation))


def max_pool2d(x, kernel, stride, pad, dilation, ceil_mode):
    """(out, indices) for x of shape (N, C, H, W); all arguments are pairs.

    The maximum over each window's in-input taps, scanned row by row; a
    larger value or a NaN replaces the current one, so ties keep the first
    and NaNs win (the last one). An all -inf window keeps its first tap. With
    dilation, a window can miss the input entirely: its value is -inf and its
    index torch's (computed from the first tap, which lies past the input).

    The scan goes tap by tap over every window at once. Taps outside the input
    read -inf from the padding, which never replaces the current value.
    """
    x = as64(x)
    n, c, h, w = x.shape
    out_size = _pool_output_sizes((h, w), kernel, stride, pad, dilation, ceil_mode)
    padding = _window_padding((h, w), out_size, kernel, stride, pad, dilation)
    xp = np.pad(x, ((0, 0), (0, 0)) + padding, constant_values=-np.inf)
    # In-input row (column) of each window's tap 0, and of torch's first tap.
    row0 = np.arange(out_size[0]) * stride[0] - pad[0]
    col0 = np.arange(out_size[1]) * stride[1] - pad[1]
    first_row = np.array([_first_tap(o, stride[0], pad[0], dilation[0]) for o in range(out_size[0])])
    first_col = np.array([_first_tap(o, stride[1], pad[1], dilation[1]) for o in range(out_size[1])])
    best = np.full((n, c) + out_size, -np.inf)
    best_idx = np.broadcast_to(first_row[:, None] * w + first_col, best.shape).astype(np.int64)
    for i, j, (rows, cols) in _tap_slices(kernel, stride, dilation, out_size):
        v = xp[:, :, rows, cols]
        take = (v > best) | np.isnan(v)
        tap_idx = (row0[:, None] + i * dilation[0]) * w + (col0 + j * dilation[1])
        best = np.where(take, v, best)
        best_idx = np.where(take, tap_idx, best_idx)
    return best, best_idx


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


def _avg_pool_divisors(out_size, h, w, kernel, stride, pad, count_include_pad, divisor_override):
    """avg_pool_divisor of every output position, as an (OH, OW) array."""
    return np.array([[avg_pool_divisor(oh, ow, h, w, kernel, stride, pad, count_include_pad,
                                       divisor_override)
                      for ow in range(out_size[1])] for oh in range(out_size[0])],
                    dtype=np.float64).reshape(out_size)


def avg_pool2d(x, kernel, stride, pad, ceil_mode, count_include_pad, divisor_override):
    """Each window's in-input taps summed, then divided by avg_pool_divisor.

    The sum goes tap by tap over every window at once; taps outside the input
    read 0 from the padding."""
    x = as64(x)
    n, c, h, w = x.shape
    out_size = _pool_output_sizes((h, w), kernel, stride, pad, (1, 1), ceil_mode)
    padding = _window_padding((h, w), out_size, kernel, stride, pad, (1, 1))
    xp = np.pad(x, ((0, 0), (0, 0)) + padding)
    total = np.zeros((n, c) + out_size)
    for _, _, (rows, cols) in _tap_slices(kernel, stride, (1, 1), out_size):
        total += xp[:, :, rows, cols]
    return total / _avg_pool_divisors(out_size, h, w, kernel, stride, pad, count_include_pad,
                                      divisor_override)


def max_pool2d_backward(grad_out, indices, input_shape, kernel, stride, pad, dilation):
    """Each input element gets the sum of the gradients of the outputs it was
    the maximum of, in the order of the outputs. Outputs whose window misses
    the input are constants (-inf) and pass no gradient on."""
    g, idx = as64(grad_out), as_int64(indices)
    n, c, h, w = input_shape
    oh_n, ow_n = g.shape[2:]
    rows_meet = np.array([bool(_taps(o, h, kernel[0], stride[0], pad[0], dilation[0]))
                          for o in range(oh_n)], dtype=bool)
    cols_meet = np.array([bool(_taps(o, w, kernel[1], stride[1], pad[1], dilation[1]))
                          for o in range(ow_n)], dtype=bool)
    meets = rows_meet[:, None] & cols_meet[None, :]  # (OH, OW): windows with an in-input tap
    # Index into the flattened input: plane (n, c) times H * W, plus the index in the plane.
    flat = idx.reshape(n * c, oh_n, ow_n) + np.arange(n * c)[:, None, None] * (h * w)
    grad = np.zeros(n * c * h * w)
    np.add.at(grad, flat[:, meets], g.reshape(n * c, oh_n, ow_n)[:, meets])
    return grad.reshape(input_shape)


def avg_pool2d_backward(grad_out, input_shape, kernel, stride, pad, count_include_pad,
                        divisor_override):
    """Each output's gradient spread evenly (by the forward's divisor) over its in-input taps.

    Tap by tap over every output at once; taps outside the input write to the
    padding, which is dropped. The taps go in reverse order, so that each input
    element adds up its outputs' shares in the order of the outputs."""
    g = as64(grad_out)
    n, c, h, w = input_shape
    out_size = g.shape[2:]
    share = g / _avg_pool_divisors(out_size, h, w, kernel, stride, pad, count_include_pad,
                                   divisor_override)
    (top, bottom), (left, right) = _window_padding((h, w), out_size, kernel, stride, pad, (1, 1))
    grad = np.zeros((n, c, top + h + bottom, left + w + right))
    for _, _, (rows, cols) in reversed(list(_tap_slices(kernel, stride, (1, 1), out_size))):
        grad[:, :, rows, cols] += share
    return grad[:, :, top:top + h, left:left + w]


def conv2d_padding(x_shape, w_shape, padding, dilation):
    """(top, bottom, left, right) for torch's padding argument ('same' puts the odd one last)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dilation[0] * (w_shape[2] - 1), dilation[1] * (w_shape[3] - 1)
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    return padding[0], padding[0], padding[1], padding[1]


def _conv_windows(xp, kernel, stride, dilation):
    """The (N, C, OH, OW, kh, kw) view of the padded input xp whose element
    [n, c, p, q, i, j] is xp[n, c, p * sh + i * dh, q * sw + j * dw]: the
    window of every output position, without a copy."""
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    return win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]


def conv2d(x, w, b, stride, padding, dilation, groups):
    """Cross-correlation of x (N, C, H, W) with w (K, C / groups, kh, kw), in float64.

    out[n, k, p, q] = b[k] + sum over c in k's group, taps (i, j) of
    w[k, c, i, j] * xpad[n, c, p * sh + i * dh, q * sw + j * dw],
    one matrix product per group.
    """
    x, w = as64(x), as64(w)
    top, bottom, left, right = conv2d_padding(x.shape, w.shape, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    win = _conv_windows(xp, w.shape[2:], stride, dilation)
    k, cg = w.shape[0], w.shape[1]
    kg = k // groups
    out = np.concatenate([
        np.einsum("ncpqij,kcij->nkpq", win[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg],
                  optimize=True)
        for g in range(groups)
    ], axis=1)
    if b is not None:
        out += as64(b)[None, :, None, None]
    return out


def conv2d_backward(grad_out, x, w, stride, padding, dilation, groups):
    """(grad_input, grad_weight, grad_bias) of conv2d, in float64: the forward
    sum differentiated term by term.

    grad_weight[k, c, i, j] = sum over n, p, q of grad_out[n, k, p, q] times
    the window element [n, c, p, q, i, j]; what each output passes back to
    each tap of its window, sum over k of grad_out[n, k, p, q] * w[k, c, i, j],
    is added, tap by tap, where that tap read the padded input. One matrix
    product per group for each.
    """
    g_out, x, w = as64(grad_out), as64(x), as64(w)
    top, bottom, left, right = conv2d_padding(x.shape, w.shape, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    win = _conv_windows(xp, w.shape[2:], stride, dilation)
    grad_xp = np.zeros_like(xp)
    grad_w = np.empty_like(w)
    k, cg = w.shape[0], w.shape[1]
    kg = k // groups
    for g in range(groups):
        cs, ks = slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)
        grad_w[ks] = np.einsum("nkpq,ncpqij->kcij", g_out[:, ks], win[:, cs], optimize=True)
        to_taps = np.einsum("nkpq,kcij->ncpqij", g_out[:, ks], w[ks], optimize=True)
        for i, j, (rows, cols) in _tap_slices(w.shape[2:], stride, dilation, g_out.shape[2:]):
            grad_xp[:, cs, rows, cols] += to_taps[..., i, j]
    grad_x = grad_xp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    return grad_x, grad_w, g_out.sum(axis=(0, 2, 3))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _cell_operands(x, h, w_ih, w_hh, b_ih, b_hh):
    """float64 (B, I) input and (B, H) state (zeros for None), weights and biases
    (zeros for None); whether the input was unbatched."""
    x = as64(x)
    unbatched = x.ndim == 1
    x = x.reshape(1, -1) if unbatched else x
    w_ih, w_hh = as64(w_ih), as64(w_hh)
    rows, hidden = w_hh.shape
    h = np.zeros((x.shape[0], hidden)) if h is None else as64(h).reshape(x.shape[0], hidden)
    b_ih = np.zeros(rows) if b_ih is None else as64(b_ih)
    b_hh = np.zeros(rows) if b_hh is None else as64(b_hh)
    return x, h, w_ih, w_hh, b_ih, b_hh, unbatched


def lstm_cell(x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch.nn.LSTMCell's step: (h', c'). Gates in the order i, f, g, o.

    i = sigmoid, f = sigmoid, g = tanh, o = sigmoid of x @ W_ih^T + b_ih + h @ W_hh^T + b_hh
    (each gate its own quarter of the columns); c' = f c + i g; h' = o tanh(c').
    """
    h, c = (None, None) if hx is None else hx
    x, h, w_ih, w_hh, b_ih, b_hh, unbatched = _cell_operands(x, h, w_ih, w_hh, b_ih, b_hh)
    c = np.zeros_like(h) if c is None else as64(c).reshape(h.shape)
    i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new[0], c_new[0]) if unbatched else (h_new, c_new)


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """torch.nn.GRUCell's step: h'. Gates in the order r, z, n.

    r, z = sigmoid of (x @ W_i^T + b_i + h @ W_h^T + b_h) for their rows;
    n = tanh(x @ W_in^T + b_in + r * (h @ W_hn^T + b_hn)); h' = (1 - z) n + z h.
    """
    x, h, w_ih, w_hh, b_ih, b_hh, unbatched = _cell_operands(x, h, w_ih, w_hh, b_ih, b_hh)
    xr, xz, xn = np.split(x @ w_ih.T + b_ih, 3, axis=1)
    hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h_new = (1 - z) * n + z * h
    return h_new[0] if unbatched else h_new


def lstm_cell_backward(grad_h, grad_c, x, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """Gradients of lstm_cell as (grad_x, (grad_h0, grad_c0), grad_w_ih, grad_w_hh,
    grad_b_ih, grad_b_hh); grad_h / grad_c None mean zeros."""
    h, c = (None, None) if hx is None else hx
    x, h, w_ih, w_hh, b_ih, b_hh, unbatched = _cell_operands(x, h, w_ih, w_hh, b_ih, b_hh)
    c = np.zeros_like(h) if c is None else as64(c).reshape(h.shape)
    gh = np.zeros_like(h) if grad_h is None else as64(grad_h).reshape(h.shape)
    gc = np.zeros_like(h) if grad_c is None else as64(grad_c).reshape(h.shape)
    i, f, g, o = np.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    tanh_c = np.tanh(f * c + i * g)
    dc_new = gc + gh * o * (1 - tanh_c**2)  # through h' = o tanh(c') and directly
    d_gates = np.concatenate([
        dc_new * g * i * (1 - i),  # i
        dc_new * c * f * (1 - f),  # f
        dc_new * i * (1 - g**2),  # g
        gh * tanh_c * o * (1 - o),  # o
    ], axis=1)
    grad_x, grad_h0, grad_c0 = d_gates @ w_ih, d_gates @ w_hh, dc_new * f
    grad_b = d_gates.sum(axis=0)
    if unbatched:
        grad_x, grad_h0, grad_c0 = grad_x[0], grad_h0[0], grad_c0[0]
    return (grad_x, (grad_h0, grad_c0), d_gates.T @ x, d_gates.T @ h, grad_b, grad_b.copy())


def gru_cell_backward(grad_h, x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """Gradients of gru_cell as (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih,
    grad_b_hh); grad_h None means zeros."""
    x, h, w_ih, w_hh, b_ih, b_hh, unbatched = _cell_operands(x, h, w_ih, w_hh, b_ih, b_hh)
    gh = np.zeros_like(h) if grad_h is None else as64(grad_h).reshape(h.shape)
    xr, xz, xn = np.split(x @ w_ih.T + b_ih, 3, axis=1)
    hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    dn = gh * (1 - z) * (1 - n**2)  # gradient of n's pre-activation xn + r hn
    dr = dn * hn * r * (1 - r)
    dz = gh * (h - n) * z * (1 - z)
    d_in = np.concatenate([dr, dz, dn], axis=1)  # of x @ W_ih^T + b_ih
    d_hid = np.concatenate([dr, dz, dn * r], axis=1)  # of h @ W_hh^T + b_hh
    grad_x = d_in @ w_ih
    grad_h0 = d_hid @ w_hh + gh * z
    if unbatched:
        grad_x, grad_h0 = grad_x[0], grad_h0[0]
    return (grad_x, grad_h0, d_in.T @ x, d_hid.T @ h, d_in.sum(axis=0), d_hid.sum(axis=0))


def _sequence(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths):
    """The forward of torch.nn.LSTM / GRU (one layer) for (T, B, I) input,
    step by step on the reference cells: (output, final states, the state
    each step started from). Entries whose length has passed keep their state
    and output zeros, as with torch's packed sequences."""
    x = as64(x)
    T, B = x.shape[:2]
    H = as64(w_hh).shape[1]
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    lstm = cell == "lstm"
    states = [np.zeros((B, H)) for _ in range(2 if lstm else 1)]
    if hx is not None:
        states = [as64(s).reshape(B, H).copy() for s in (hx if lstm else [hx])]
    out, starts = np.zeros((T, B, H)), []
    for t in range(T):
        starts.append([s.copy() for s in states])
        run = lens > t
        if lstm:
            new = lstm_cell(x[t][run], tuple(s[run] for s in states), w_ih, w_hh, b_ih, b_hh)
        else:
            new = [gru_cell(x[t][run], states[0][run], w_ih, w_hh, b_ih, b_hh)]
        for s, n in zip(states, new):
            s[run] = n
        out[t][run] = new[0]
    return out, states, starts


def lstm(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None):
    """torch.nn.LSTM for one layer, (T, B, I) input: (output, (h_n, c_n)); with
    lengths, torch's pack_padded_sequence -> LSTM -> pad_packed_sequence."""
    out, (h, c), _ = _sequence("lstm", x, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    return out, (h, c)


def gru(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None):
    """torch.nn.GRU for one layer, (T, B, I) input: (output, h_n); lengths as for lstm."""
    out, (h,), _ = _sequence("gru", x, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    return out, h


def _sequence_backward(cell, grad_out, grad_states, x, hx, w_ih, w_hh, b_ih, b_hh, lengths):
    x = as64(x)
    T, B = x.shape[:2]
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    lstm = cell == "lstm"
    _, finals, starts = _sequence(cell, x, hx, w_ih, w_hh, b_ih, b_hh, lengths)
    d = [np.zeros_like(s) if g is None else as64(g).reshape(s.shape).copy()
         for s, g in zip(finals, grad_states)]
    grad_x = np.zeros_like(x)
    sums = None
    for t in reversed(range(T)):
        run = lens > t
        gh = d[0][run] + (0 if grad_out is None else as64(grad_out)[t][run])
        start = [s[run] for s in starts[t]]
        if lstm:
            gx, (dh, dc), *w = lstm_cell_backward(gh, d[1][run], x[t][run], tuple(start), w_ih,
                                                  w_hh, b_ih, b_hh)
            d[1][run] = dc
        else:
            gx, dh, *w = gru_cell_backward(gh, x[t][run], start[0], w_ih, w_hh, b_ih, b_hh)
        d[0][run] = dh
        grad_x[t][run] = gx
        sums = w if sums is None else [a + b for a, b in zip(sums, w)]
    return grad_x, d, sums


def lstm_backward(grad_out, grad_h_n, grad_c_n, x, hx, w_ih, w_hh, b_ih=None, b_hh=None,
                  lengths=None):
    """Gradients of lstm, by backward steps of the reference cell: (grad_x,
    (grad_h0, grad_c0), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh); an incoming
    gradient None means zeros."""
    gx, (gh, gc), w = _sequence_backward("lstm", grad_out, (grad_h_n, grad_c_n), x, hx, w_ih,
                                         w_hh, b_ih, b_hh, lengths)
    return (gx, (gh, gc), *w)


def gru_backward(grad_out, grad_h_n, x, hx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None):
    """Gradients of gru: (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)."""
    gx, (gh,), w = _sequence_backward("gru", grad_out, (grad_h_n,), x, hx, w_ih, w_hh, b_ih,
                                      b_hh, lengths)
    return (gx, gh, *w)


# Query rows per step of the attention references: a (rows, S) block of
# scores at a time, so that the benchmark's L = S = 4096 fits in memory.
_ATTENTION_ROWS = 256


def attention_keep(L, S, window=None, is_causal=False, bottom_right=False):
    """The (L, S) boolean of the (query, key) pairs that take part: keys
    i - left .. i + right of query i for window (left, right) (None or -1:
    unbounded on that side), and j <= i with is_causal; top-left aligned, or
    with bottom_right query i placed at key position i + S - L (varlen)."""
    i, j = np.arange(L)[:, None] + (S - L if bottom_right else 0), np.arange(S)[None, :]
    left, right = (None, None) if window is None else window
    keep = np.ones((L, S), dtype=bool)
    if left is not None and left >= 0:
        keep &= j >= i - left
    if right is not None and right >= 0:
        keep &= j <= i + right
    if is_causal:
        keep &= j <= i
    return keep


def _attention_operands(q, k, v, attn_mask, is_causal, scale, enable_gqa, window):
    """Float64 q, k, v broadcast to the output's leading dimensions (key/value
    heads repeated for GQA), the additive mask (None or broadcastable to
    (..., L, S), -inf where a boolean mask is False), the (L, S) boolean of
    keys each query sees under is_causal and window, and the scale."""
    q, k, v = as64(q), as64(k), as64(v)
    if enable_gqa and k.ndim >= 3 and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q = np.broadcast_to(q, lead + q.shape[-2:])
    k = np.broadcast_to(k, lead + k.shape[-2:])
    v = np.broadcast_to(v, lead + v.shape[-2:])
    add = None
    if attn_mask is not None:
        if str(attn_mask.dtype).removeprefix("torch.") == "bool":
            keep_mask = np.asarray(attn_mask.cpu() if hasattr(attn_mask, "cpu") else attn_mask)
            add = np.where(keep_mask, 0.0, -np.inf)
        else:
            add = as64(attn_mask)
        add = np.broadcast_to(add, lead + add.shape[-2:])
    keep = attention_keep(q.shape[-2], k.shape[-2], window, is_causal)
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    return q, k, v, add, keep, scale, lead


def _attention_scores(q, k, add, keep, scale, idx, r0, r1):
    s = q[idx][r0:r1] @ k[idx].T * scale
    if add is not None:
        s = s + add[idx][r0:r1]
    return np.where(keep[r0:r1], s, -np.inf)


def attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
              window=None):
    """torch's scaled_dot_product_attention without dropout, and the row
    log-sum-exp of the scaled, masked scores: (out, lse). window=(left, right)
    keeps keys i - left .. i + right (None or -1: unbounded). A row with no key
    taking part gives 0 and lse -inf."""
    q, k, v, add, keep, scale, lead = _attention_operands(q, k, v, attn_mask, is_causal, scale,
                                                          enable_gqa, window)
    L = q.shape[-2]
    out = np.zeros(lead + (L, v.shape[-1]))
    lse = np.full(lead + (L,), -np.inf)
    for idx in np.ndindex(*lead):
        for r0 in range(0, L, _ATTENTION_ROWS):
            r1 = min(r0 + _ATTENTION_ROWS, L)
            s = _attention_scores(q, k, add, keep, scale, idx, r0, r1)
            m = s.max(axis=-1, initial=-np.inf, keepdims=True)
            live = np.isfinite(m[:, 0])
            p = np.exp(s[live] - m[live])
            total = p.sum(axis=-1, keepdims=True)
            out[idx][r0:r1][live] = p @ v[idx] / total
            lse[idx][r0:r1][live] = (m[live] + np.log(total))[:, 0]
    return out, lse


def _sum_to_shape(g, shape, group_axis_heads=None):
    """g summed to ``shape`` over broadcast dimensions; group_axis_heads (key
    heads) folds GQA's repeated heads (dimension -3) back first."""
    if group_axis_heads is not None and g.shape[-3] != group_axis_heads:
        group = g.shape[-3] // group_axis_heads
        g = g.reshape(g.shape[:-3] + (group_axis_heads, group) + g.shape[-2:]).sum(axis=-3)
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra)))
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    return g.sum(axis=axes, keepdims=True)


def attention_backward(grad_out, q, k, v, attn_mask=None, is_causal=False, scale=None,
                       enable_gqa=False, window=None):
    """Gradients (grad_q, grad_k, grad_v) of attention's output, of the
    shapes of q, k and v."""
    shapes = [np.shape(as64(x)) for x in (q, k, v)]
    q, k, v, add, keep, scale, lead = _attention_operands(q, k, v, attn_mask, is_causal, scale,
                                                          enable_gqa, window)
    go = np.broadcast_to(as64(grad_out), lead + (q.shape[-2], v.shape[-1]))
    gq, gk, gv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    L = q.shape[-2]
    for idx in np.ndindex(*lead):
        for r0 in range(0, L, _ATTENTION_ROWS):
            r1 = min(r0 + _ATTENTION_ROWS, L)
            s = _attention_scores(q, k, add, keep, scale, idx, r0, r1)
            m = s.max(axis=-1, initial=-np.inf, keepdims=True)
            live = np.isfinite(m)
            p = np.where(live, np.exp(s - np.where(live, m, 0.0)), 0.0)
            p /= np.where(live, p.sum(axis=-1, keepdims=True), 1.0)
            dp = go[idx][r0:r1] @ v[idx].T
            ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
            gv[idx] += p.T @ go[idx][r0:r1]
            gq[idx][r0:r1] = scale * ds @ k[idx]
            gk[idx] += scale * ds.T @ q[idx][r0:r1]
    heads = shapes[1][-3] if enable_gqa and len(shapes[1]) >= 3 else None
    return (_sum_to_shape(gq, shapes[0]), _sum_to_shape(gk, shapes[1], heads),
            _sum_to_shape(gv, shapes[2], heads))


def _varlen_sequences(q, k, v, cu_seqlens_q, cu_seqlens_k, is_causal, window):
    """Per packed sequence: its query rows, key rows, and (H, L, E), (Hkv, S, E),
    (Hkv, S, Ev) float64 operands with its explicit bottom-right mask."""
    cq, ck = np.asarray(cu_seqlens_q), np.asarray(cu_seqlens_k)
    q, k, v = as64(q), as64(k), as64(v)
    for b in range(len(cq) - 1):
        rq, rk = slice(int(cq[b]), int(cq[b + 1])), slice(int(ck[b]), int(ck[b + 1]))
        L, S = rq.stop - rq.start, rk.stop - rk.start
        keep = attention_keep(L, S, window, is_causal, bottom_right=True)
        yield (rq, rk, q[rq].transpose(1, 0, 2), k[rk].transpose(1, 0, 2),
               v[rk].transpose(1, 0, 2), keep)


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, is_causal=False, scale=None,
                     window=None):
    """flash_attn_varlen_func: each packed sequence on its own with an explicit
    bottom-right mask (GQA when key heads divide query heads): (out
    (total_q, H, Ev), lse (H, total_q)); rows no sequence owns give 0, -inf."""
    H, Ev = np.shape(q)[1], np.shape(v)[2]
    out = np.zeros((np.shape(q)[0], H, Ev))
    lse = np.full((H, np.shape(q)[0]), -np.inf)
    for rq, _, qb, kb, vb, keep in _varlen_sequences(q, k, v, cu_seqlens_q, cu_seqlens_k,
                                                     is_causal, window):
        o, l = attention(qb, kb, vb, keep, scale=scale, enable_gqa=True)
        out[rq] = o.transpose(1, 0, 2)
        lse[:, rq] = l
    return out, lse


def attention_varlen_backward(grad_out, q, k, v, cu_seqlens_q, cu_seqlens_k, is_causal=False,
                              scale=None, window=None):
    """Gradients (grad_q, grad_k, grad_v) of attention_varlen's output."""
    gq, gk, gv = (np.zeros(np.shape(x)) for x in (q, k, v))
    go = as64(grad_out)
    for rq, rk, qb, kb, vb, keep in _varlen_sequences(q, k, v, cu_seqlens_q, cu_seqlens_k,
                                                      is_causal, window):
        g = attention_backward(go[rq].transpose(1, 0, 2), qb, kb, vb, keep, scale=scale,
                               enable_gqa=True)
        gq[rq], gk[rk], gv[rk] = (x.transpose(1, 0, 2) for x in g)
    return gq, gk, gv


# ---------------------------------------------------------------------------
# Recursive networks over forests, node by node in topological order.

_TREE_ACTIVATIONS = {
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
    "relu": (lambda v: np.maximum(v, 0.0), lambda y: (y > 0).astype(np.float64)),
    "sigmoid": (_sigmoid, lambda y: y * (1.0 - y)),
    "identity": (lambda v: v, np.ones_like),
}


def _tree_children(children):
    return np.asarray(as_int64(children))


def _gather_children(rows, ch):
    """[row of ch[0]; ...; row of ch[-1]], zeros for a missing child (-1)."""
    H = rows.shape[1]
    return np.concatenate([rows[c] if c >= 0 else np.zeros(H) for c in ch])


def tree_compose(leaves, children, weight, bias=None, activation="tanh"):
    """Every node's vector: internal node i = act(weight @ [children's rows] + bias)."""
    leaves, w, children = as64(leaves), as64(weight), _tree_children(children)
    b = np.zeros(w.shape[0]) if bias is None else as64(bias)
    act = _TREE_ACTIVATIONS[activation][0]
    out = np.concatenate([leaves, np.zeros((children.shape[0], w.shape[0]))])
    n_leaves = leaves.shape[0]
    for i, ch in enumerate(children):
        out[n_leaves + i] = act(w @ _gather_children(out, ch) + b)
    return out


def tree_compose_backward(grad_out, output, children, weight, activation="tanh"):
    """(grad_leaves, grad_weight, grad_bias) of tree_compose, from the last node back."""
    g, y, w = as64(grad_out).copy(), as64(output), as64(weight)
    children = _tree_children(children)
    slope = _TREE_ACTIVATIONS[activation][1]
    H, n_leaves = w.shape[0], y.shape[0] - children.shape[0]
    gw, gb = np.zeros_like(w), np.zeros(H)
    for i in reversed(range(children.shape[0])):
        node, ch = n_leaves + i, children[i]
        dz = g[node] * slope(y[node])
        gw += np.outer(dz, _gather_children(y, ch))
        gb += dz
        dx = w.T @ dz
        for k, c in enumerate(ch):
            if c >= 0:
                g[c] += dx[k * H:(k + 1) * H]
    return g[:n_leaves], gw, gb


def tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou=None, b_f=None, node_inputs=None):
    """Every node's (h, c) of the N-ary Tree-LSTM (Tai et al. 2015, section 3.2).

    leaves: h (n_leaves, H), with c = 0, or a pair (h, c). Gates i, o, u are
    rows [0, H), [H, 2H), [2H, 3H) of w_iou (3H, I), u_iou (3H, N * H) and
    b_iou; u_f's block (k, l) is U^(f)_kl; w_f (H, I) and b_f (H,) are shared
    by every child's forget gate.
    """
    h0, c0 = (leaves if isinstance(leaves, (tuple, list)) else (leaves, None))
    h0 = as64(h0)
    c0 = np.zeros_like(h0) if c0 is None else as64(c0)
    children = _tree_children(children)
    w_iou, u_iou, w_f, u_f = (as64(a) for a in (w_iou, u_iou, w_f, u_f))
    H = h0.shape[1]
    N = children.shape[1]
    b_iou = np.zeros(3 * H) if b_iou is None else as64(b_iou)
    b_f = np.zeros(H) if b_f is None else as64(b_f)
    n_leaves, n_internal = h0.shape[0], children.shape[0]
    h = np.concatenate([h0, np.zeros((n_internal, H))])
    c = np.concatenate([c0, np.zeros((n_internal, H))])
    for j, ch in enumerate(children):
        x = _gather_children(h, ch)
        iou = u_iou @ x + b_iou
        f = u_f @ x + np.tile(b_f, N)
        if node_inputs is not None:
            inp = as64(node_inputs)[j]
            iou += w_iou @ inp
            f += np.tile(w_f @ inp, N)
        i, o, u = _sigmoid(iou[:H]), _sigmoid(iou[H:2 * H]), np.tanh(iou[2 * H:])
        f = _sigmoid(f)
        cell = i * u
        for k, child in enumerate(ch):
            if child >= 0:
                cell += f[k * H:(k + 1) * H] * c[child]
        c[n_leaves + j] = cell
        h[n_leaves + j] = o * np.tanh(cell)
    return h, c


def tree_lstm_backward(grad_h, grad_c, leaves, children, w_iou, u_iou, w_f, u_f, b_iou=None,
                       b_f=None, node_inputs=None):
    """Gradients of tree_lstm, from the last node back: ((grad_leaves_h,
    grad_leaves_c), grad_node_inputs (None without), grad_w_iou, grad_u_iou,
    grad_w_f, grad_u_f, grad_b_iou, grad_b_f). grad_h, grad_c: every node's
    (None: zeros)."""
    h, c = tree_lstm(leaves, children, w_iou, u_iou, w_f, u_f, b_iou, b_f, node_inputs)
    children = _tree_children(children)
    w_iou, u_iou, w_f, u_f = (as64(a) for a in (w_iou, u_iou, w_f, u_f))
    H, N = h.shape[1], children.shape[1]
    n_leaves = h.shape[0] - children.shape[0]
    b_iou = np.zeros(3 * H) if b_iou is None else as64(b_iou)
    b_f = np.zeros(H) if b_f is None else as64(b_f)
    inputs = None if node_inputs is None else as64(node_inputs)
    gh = np.zeros_like(h) if grad_h is None else as64(grad_h).copy()
    gc = np.zeros_like(c) if grad_c is None else as64(grad_c).copy()
    grads = [np.zeros_like(a) for a in (w_iou, u_iou, w_f, u_f, b_iou, b_f)]
    g_w_iou, g_u_iou, g_w_f, g_u_f, g_b_iou, g_b_f = grads
    g_in = None if inputs is None else np.zeros_like(inputs)
    for j in reversed(range(children.shape[0])):
        node, ch = n_leaves + j, children[j]
        x = _gather_children(h, ch)
        v = np.zeros(w_iou.shape[1]) if inputs is None else inputs[j]
        iou = u_iou @ x + b_iou + w_iou @ v
        i, o, u = _sigmoid(iou[:H]), _sigmoid(iou[H:2 * H]), np.tanh(iou[2 * H:])
        f = _sigmoid(u_f @ x + np.tile(b_f + w_f @ v, N))
        t = np.tanh(c[node])
        dc = gc[node] + gh[node] * o * (1 - t * t)
        d_iou = np.concatenate([dc * u * i * (1 - i), gh[node] * t * o * (1 - o),
                                dc * i * (1 - u * u)])
        c_children = _gather_children(c, ch)
        d_f = dc[np.arange(N * H) % H] * c_children * f * (1 - f)
        g_u_iou += np.outer(d_iou, x)
        g_u_f += np.outer(d_f, x)
        d_fv = d_f.reshape(N, H).sum(axis=0)
        g_b_iou += d_iou
        g_b_f += d_fv
        g_w_iou += np.outer(d_iou, v)
        g_w_f += np.outer(d_fv, v)
        if g_in is not None:
            g_in[j] = w_iou.T @ d_iou + w_f.T @ d_fv
        dx = u_iou.T @ d_iou + u_f.T @ d_f
        for k, child in enumerate(ch):
            if child >= 0:
                gh[child] += dx[k * H:(k + 1) * H]
                gc[child] += dc * f[k * H:(k + 1) * H]
    return (gh[:n_leaves], gc[:n_leaves]), g_in, *grads
