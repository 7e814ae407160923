"""``dk.matmul``: the GEMM core as a public function."""

from __future__ import annotations

from . import _arrays, _backend


def matmul(a, b):
    """Matrix product ``a @ b`` of 2-D arrays, or of 3-D batches of equal size.

    ``a`` is ``(M, K)`` or ``(B, M, K)`` and ``b`` is ``(K, N)`` or
    ``(B, K, N)``; the result is ``(M, N)`` or ``(B, M, N)``, of ``a``'s kind on
    its device. float32 and float64 everywhere, float16 and bfloat16 on CUDA
    (tensor cores, accumulating in float32). Any strides are accepted.
    """
    op = "matmul"
    A = _arrays.take(a, "a", op)
    B = _arrays.take(b, "b", op)
    device = _arrays.check_same_device(op, ("a", A), ("b", B))
    dtype = _arrays.check_same_dtype(op, ("a", A), ("b", B))
    module, cuda_path = _backend.for_device(device)
    _arrays.check_supported_dtype(op, "a", A, cuda_path)

    ndim = A.ndim  # read once: Array.ndim is a property call
    if ndim not in (2, 3) or B.ndim != ndim:
        raise ValueError(
            f"{op}: expected a and b both 2-D (M, K) @ (K, N) or both 3-D (B, M, K) @ (B, K, N); "
            f"got a of shape {A.shape} and b of shape {B.shape}"
        )
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(
            f"{op}: a's last dimension ({A.shape[-1]}) must equal b's second-to-last "
            f"({B.shape[-2]}); got a of shape {A.shape} and b of shape {B.shape}"
        )
    batched = ndim == 3
    if batched and A.shape[0] != B.shape[0]:
        raise ValueError(
            f"{op}: batch sizes differ: a has {A.shape[0]} and b has {B.shape[0]} "
            f"(shapes {A.shape} and {B.shape})"
        )

    m, k = A.shape[-2:]
    n = B.shape[-1]
    batch = A.shape[0] if batched else 1
    out_shape = (batch, m, n) if batched else (m, n)
    C, result = _arrays.empty(out_shape, dtype, A)

    a_bs, b_bs, c_bs = (A.strides[0], B.strides[0], C.strides[0]) if batched else (0, 0, 0)
    _backend.launch(
        module.matmul, A, dtype, m, n, k, batch,
        A.address, a_bs, A.strides[-2], A.strides[-1],
        B.address, b_bs, B.strides[-2], B.strides[-1],
        C.address, c_bs, C.strides[-2], C.strides[-1],
    )
    return result
