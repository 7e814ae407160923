"""The CUDA execution emulator (docs/emulator.md) and the CUDA kernels on it.

The wrapper self-tests (mma, ldmatrix, shuffles and votes, cp.async) run on
the emulator and, where a GPU is present, on it too: both are checked against
the same NumPy results, which proves that the emulator's fragment layouts are
the hardware's (their entry points are in the test modules ``_cuda_emu_testing``
and ``_cuda_testing``). The rest uses the fixtures of tests/emu/ (deliberately
broken kernels among them) and ``dk.matmul`` under ``dlkern.testing.cuda_emulation``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import dlkern as dk
from dlkern import _backend, testing

try:
    from dlkern import _cuda_emu as emu
    from dlkern import _emu_fixtures as fixtures
except ImportError:  # a build without -DDLKERN_EMU=ON: only the GPU self-tests can run
    emu = fixtures = None

requires_emulator = pytest.mark.skipif(
    emu is None, reason="dlkern was built without -DDLKERN_EMU=ON"
)
# The self-tests' entry points, per device.
SELFTEST_MODULES = {"emu": "dlkern._cuda_emu_testing", "gpu": "dlkern._cuda_testing"}
NO_SELFTESTS = ("dlkern was built without its test modules: build with -DDLKERN_TESTS=ON "
                "(the default with DLKERN_EMU=ON)")
pytestmark = pytest.mark.cuda

ORDERS = [("forward", 0), ("reverse", 0), ("shuffle", 20240611)]
ORDER_IDS = [o for o, _ in ORDERS]


def fresh_rng():
    return np.random.default_rng()


# --------------------------------------------------------------- devices ---
class Device:
    """Runs the self-test entry points on the emulator (host memory) or on a
    GPU (device memory from torch, as raw bytes, so any dtype travels)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.module = importlib.import_module(SELFTEST_MODULES[kind])
        if kind == "gpu":
            import torch

            self.torch = torch

    def put(self, array: np.ndarray):
        array = np.ascontiguousarray(array).copy()
        if self.kind == "emu":
            return array
        return (self.torch.from_numpy(array.view(np.uint8)).cuda(), array.dtype, array.shape)

    def empty_like(self, array: np.ndarray, fill):
        return self.put(np.full(array.shape, fill, array.dtype))

    def address(self, x) -> int:
        return x.__array_interface__["data"][0] if self.kind == "emu" else x[0].data_ptr()

    def get(self, x) -> np.ndarray:
        if self.kind == "emu":
            return x
        self.torch.cuda.synchronize()
        data, dtype, shape = x
        return data.cpu().numpy().view(dtype).reshape(shape)

    @property
    def stream(self) -> int:
        return 0 if self.kind == "emu" else self.torch.cuda.current_stream().cuda_stream


def _gpu_ready() -> bool:
    if not dk.cuda_available():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _built(kind: str) -> bool:
    return importlib.util.find_spec(SELFTEST_MODULES[kind]) is not None


DEVICES = [
    pytest.param(
        "emu",
        id="emu",
        marks=[requires_emulator, pytest.mark.skipif(not _built("emu"), reason=NO_SELFTESTS)],
    ),
    pytest.param(
        "gpu",
        id="gpu",
        marks=[
            pytest.mark.skipif(not _gpu_ready(), reason="needs a GPU and CUDA torch"),
            pytest.mark.skipif(not _built("gpu"), reason=NO_SELFTESTS),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return Device(request.param)


# ----------------------------------------------------- operand encodings ---
def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even (finite x)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def tf32_value(x: np.ndarray) -> np.ndarray:
    """What the tensor core reads of a float32: the top 19 bits."""
    return (np.ascontiguousarray(x, np.float32).view(np.uint32) & 0xFFFFE000).view(np.float32)


MMA_SHAPES = {  # name: (K, operand encoding)
    "m16n8k16_f16": (16, "f16"),
    "m16n8k16_bf16": (16, "bf16"),
    "m16n8k8_f16": (8, "f16"),
    "m16n8k8_bf16": (8, "bf16"),
    "m16n8k8_tf32": (8, "tf32"),
}


def mma_operand(rng, shape, kind):
    """(what the kernel gets, the values the tensor core multiplies)."""
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "f16":
        h = x.astype(np.float16)
        return h.view(np.uint16), h.astype(np.float64)
    if kind == "bf16":
        bits = bf16_bits(x)
        return bits, bf16_value(bits).astype(np.float64)
    return x, tf32_value(x).astype(np.float64)


# ------------------------------------------------- instruction wrappers ---
@pytest.mark.parametrize("shape", list(MMA_SHAPES))
def test_mma_wrapper_matches_matrix_product(device, shape):
    k, kind = MMA_SHAPES[shape]
    rng = fresh_rng()
    a, a_val = mma_operand(rng, (16, k), kind)
    b, b_val = mma_operand(rng, (k, 8), kind)
    c = rng.standard_normal((16, 8)).astype(np.float32)
    A, B, C = device.put(a), device.put(b), device.put(c)
    D = device.empty_like(c, np.nan)
    device.module.mma(
        shape,
        device.address(A),
        device.address(B),
        device.address(C),
        device.address(D),
        0,
        device.stream,
    )
    d = device.get(D)
    expected = a_val @ b_val + c
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-4)
    if kind == "tf32":
        # Truncation, not the full float32 operands: the difference shows.
        full = a.astype(np.float64) @ b.astype(np.float64) + c
        assert np.abs(d - full).max() > 1e-4


@pytest.mark.parametrize("matrices", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True], ids=["rows", "trans"])
def test_ldmatrix_wrapper_layout(device, matrices, trans):
    src = fresh_rng().integers(0, 2**16, (matrices, 8, 8), dtype=np.uint16)
    out = np.full((32, matrices), 0xDEADBEEF, np.uint32)
    S, O = device.put(src), device.put(out)
    device.module.ldmatrix(
        matrices, trans, device.address(S), device.address(O), 0, device.stream
    )
    got = device.get(O)
    lane = np.arange(32)
    row, col = lane // 4, 2 * (lane % 4)
    m = src.transpose(0, 2, 1) if trans else src  # .trans delivers the transpose
    lo = m[:, row, col].T.astype(np.uint32)
    hi = m[:, row, col + 1].T.astype(np.uint32)
    np.testing.assert_array_equal(got, lo | (hi << 16))


def shuffle_reference(op, values, arg, width):
    """CUDA's documented shuffle semantics, lane by lane."""
    out = values.copy()
    for lane in range(32):
        segment = lane // width * width
        if op == "idx":
            src = segment + arg % width
        elif op == "up":
            src = lane - arg if lane - segment >= arg else lane
        elif op == "down":
            src = lane + arg if lane - segment + arg < width else lane
        else:  # xor: lanes may read earlier segments, never later ones
            src = lane ^ arg
            src = src if src // width <= lane // width else lane
        out[lane] = values[src]
    return out


SHUFFLE_ARGS = {
    "idx": [0, 5, 13, 37, -3],
    "up": [0, 1, 3, 16],
    "down": [1, 2, 7, 16],
    "xor": [1, 5, 8, 16, 31],
}


@pytest.mark.parametrize("op", list(SHUFFLE_ARGS))
def test_shuffle_width_rules(device, op):
    code = {"idx": 0, "up": 1, "down": 2, "xor": 3}[op]
    values = fresh_rng().integers(-(2**31), 2**31 - 1, 32, dtype=np.int32)
    In = device.put(values)
    for width in (1, 2, 4, 8, 16, 32):
        for arg in SHUFFLE_ARGS[op]:
            Out = device.empty_like(values, -7)
            device.module.warp(
                code,
                0xFFFFFFFF,
                arg,
                width,
                device.address(In),
                device.address(Out),
                0,
                device.stream,
            )
            np.testing.assert_array_equal(
                device.get(Out),
                shuffle_reference(op, values, arg, width),
                err_msg=f"{op} arg={arg} width={width}",
            )


def test_shuffle_with_partial_mask(device):
    values = fresh_rng().integers(-1000, 1000, 32, dtype=np.int32)
    In = device.put(values)
    for code, arg, expected_low in [
        (0, 3, np.full(16, values[3])),
        (3, 1, values[:16].reshape(8, 2)[:, ::-1].ravel()),
    ]:
        Out = device.empty_like(values, -7)
        device.module.warp(
            code, 0x0000FFFF, arg, 16, device.address(In), device.address(Out), 0, device.stream
        )
        got = device.get(Out)
        np.testing.assert_array_equal(got[:16], expected_low)
        # Lanes outside the mask did not shuffle.
        np.testing.assert_array_equal(got[16:], values[16:])


@pytest.mark.parametrize("mask", [0xFFFFFFFF, 0x0000FFFF, 0xF0F0F0F0, 0x80000001])
def test_votes(device, mask):
    values = fresh_rng().integers(0, 100, 32, dtype=np.int32)
    In = device.put(values)
    members = [lane for lane in range(32) if mask >> lane & 1]
    for threshold in (-1, 50, 99):
        predicate = {lane: values[lane] > threshold for lane in members}
        ballot = sum(1 << lane for lane, p in predicate.items() if p)
        expected_by_op = {
            4: np.uint32(ballot).view(np.int32),
            5: int(any(predicate.values())),
            6: int(all(predicate.values())),
        }
        for code, expected in expected_by_op.items():
            Out = device.empty_like(values, -7)
            device.module.warp(
                code, mask, threshold, 32, device.address(In), device.address(Out), 0, device.stream
            )
            got = device.get(Out)
            want = values.copy()
            want[members] = expected
            np.testing.assert_array_equal(got, want, err_msg=f"op {code} threshold {threshold}")


def test_cp_async_pipeline(device):
    n = device.module.cp_async_threads
    rng = fresh_rng()
    chunks = rng.standard_normal((2 * n, 4)).astype(np.float32)
    valid = (rng.random(2 * n) > 0.25).astype(np.uint8)
    In, V = device.put(chunks), device.put(valid)
    Out = device.empty_like(chunks, np.nan)
    device.module.cp_async(
        device.address(In), device.address(V), device.address(Out), 0, device.stream
    )
    landed = np.where(valid[:, None] == 1, chunks, 0.0)  # invalid chunks are zero-filled
    source = np.concatenate([(np.arange(n) + 1) % n, n + (np.arange(n) + 1) % n])
    np.testing.assert_array_equal(device.get(Out), landed[source])


# ------------------------------------------------------ the scheduler ---
@requires_emulator
def test_missing_syncthreads_is_caught_by_reordering():
    n = 64
    wrong_orders = []
    for order, seed in ORDERS:
        x = fresh_rng().standard_normal(n).astype(np.float32)  # fresh: stale data never matches
        expected = np.concatenate([x[:1], x[:-1]])
        correct = fixtures.shift(x, missing_sync=False, order=order, seed=seed)
        np.testing.assert_array_equal(correct, expected)
        x = fresh_rng().standard_normal(n).astype(np.float32)
        expected = np.concatenate([x[:1], x[:-1]])
        if not np.array_equal(
            fixtures.shift(x, missing_sync=True, order=order, seed=seed), expected
        ):
            wrong_orders.append(order)
    # Forward order happens to hide this bug; the other orders expose it.
    assert wrong_orders == ["reverse", "shuffle"]


@requires_emulator
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_barriers_indices_and_warp_shuffles_in_3d_blocks(order, seed):
    grid, block = (3, 2, 2), (7, 5, 3)  # 105 threads: the last warp has 9 lanes
    blocks, threads, n = 12, 105, 333
    x = fresh_rng().standard_normal((blocks, n)).astype(np.float32)
    sums, ids = fixtures.block_reduce(x, grid, block, order, seed)
    np.testing.assert_allclose(sums, x.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-4)
    # The reduction order is fixed, so every fiber order gives the same bits.
    ref_sums, _ = fixtures.block_reduce(x, grid, block, "forward", 0)
    np.testing.assert_array_equal(sums, ref_sums)
    tz, ty, tx = np.meshgrid(range(3), range(5), range(7), indexing="ij")
    bz, by, bx = np.meshgrid(range(2), range(2), range(3), indexing="ij")
    expected = np.zeros((blocks, threads, 6), np.int32)
    expected[:, :, 0], expected[:, :, 1], expected[:, :, 2] = tx.ravel(), ty.ravel(), tz.ravel()
    expected[:, :, 3] = bx.ravel()[:, None]
    expected[:, :, 4] = by.ravel()[:, None]
    expected[:, :, 5] = bz.ravel()[:, None]
    np.testing.assert_array_equal(ids, expected)


@requires_emulator
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_atomics_across_parallel_blocks(order, seed):
    blocks, threads = 23, 96
    total = blocks * threads
    r = fixtures.atomics(blocks, threads, order, seed)
    g = np.arange(total)
    assert r["add"] == total
    assert r["add_u"] == 2 * total
    assert r["add_ull"] == total << 33
    assert r["add_f"] == 0.5 * total
    assert r["add_d"] == 0.25 * total
    assert r["add_h"] == 1000.0
    assert r["add_bf"] == 200.0
    assert r["max"] == (g * 7 % 1001).max()
    assert r["min"] == -(g * 13 % 997).max()
    assert r["inc"] == total % 10
    assert r["dec"] == (-total) % 10  # starts at 0, wraps to 9
    assert r["cas"] == 3 * total
    # atomicExch hands every value out exactly once.
    assert sorted([*r["exch_seen"], r["exch"]]) == [-1, *range(total)]
    assert r["bits_or"] == 0xFFFFFFFF
    assert r["bits_and"] == 0x80000000
    assert r["bits_xor"] == sum(1 << b for b in range(5) if np.count_nonzero(g % 5 == b) % 2)
    assert r["sub"] == -2 * total


@requires_emulator
def test_exited_lanes_take_no_part_in_shuffles():
    x = fresh_rng().integers(0, 1000, 32, dtype=np.int32)
    out = fixtures.exited_lane_shuffle(x)
    np.testing.assert_array_equal(out[:8], x[8:16])
    np.testing.assert_array_equal(out[8:16], -1)  # read from exited lanes: poison
    np.testing.assert_array_equal(out[16:], 12345)


@requires_emulator
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_cp_async_destination_is_stale_until_wait(order, seed):
    n = 32
    x = fresh_rng().standard_normal((2, n, 4)).astype(np.float32)
    out = fixtures.cp_async_early_read(x, order, seed)
    poison = np.full((n, 4), np.nan, np.float32)
    np.testing.assert_array_equal(out[0, 0], poison)  # before any wait
    np.testing.assert_array_equal(out[0, 1], poison)
    np.testing.assert_array_equal(out[1, 0], x[0])  # wait<1>: the older group landed
    np.testing.assert_array_equal(out[1, 1], poison)  # ...the newer one not yet
    np.testing.assert_array_equal(out[2, 0], x[0])
    np.testing.assert_array_equal(out[2, 1], x[1])


@requires_emulator
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_cp_async_without_barrier_is_caught(order, seed):
    n = 48
    x = fresh_rng().standard_normal((n, 4)).astype(np.float32)
    out = fixtures.cp_async_missing_barrier(x, order, seed)
    assert np.isnan(out).any()  # some thread read a neighbour's chunk before it landed


FAILURES = {
    "divergent_barrier": "threads wait at different __syncthreads()",
    "exit_before_barrier": "some threads exited while others wait at __syncthreads()",
    "warp_vs_barrier": "deadlock",
    "mismatched_votes": "deadlock",
    "mask_without_self": "does not include the calling lane",
    "bad_width": "width must be a power of two",
    "partial_warp_mma": "needs all 32 lanes",
    "misaligned_ldmatrix": "not a 16-byte aligned",
}


def run_with_timeout(fn, timeout=60.0):
    """fn()'s exception (or None); fails the test instead of hanging."""
    outcome = {}

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the emulator hung for {timeout} s instead of raising"
    return outcome.get("error")


@requires_emulator
@pytest.mark.parametrize("kind", list(FAILURES))
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_deadlocks_and_misuse_raise(kind, order, seed):
    error = run_with_timeout(lambda: fixtures.fail(kind, order, seed))
    assert isinstance(error, RuntimeError), error
    message = str(error)
    assert FAILURES[kind] in message
    assert "emulated kernel 'kernel'" in message  # and where: kernel, block
    assert "block (0,0,0)" in message


@requires_emulator
def test_deadlock_message_names_the_waits():
    message = str(run_with_timeout(lambda: fixtures.fail("warp_vs_barrier")))
    assert (
        "threads 0-15: wait at __shfl_sync(mask 0xffffffff) in warp_vs_barrier_kernel (fixtures.cuh:"
        in message
    )
    assert (
        "threads 16-31: wait at __syncthreads() in warp_vs_barrier_kernel (fixtures.cuh:" in message
    )


# ------------------------------------------------ launches and memory ---
@requires_emulator
@pytest.mark.parametrize(
    "grid,block",
    [
        ((1, 1, 1), (1025, 1, 1)),
        ((1, 1, 1), (32, 32, 2)),
        ((1, 1, 1), (1, 1, 65)),
        ((1, 65536, 1), (32, 1, 1)),
        ((0, 1, 1), (32, 1, 1)),
        ((1, 1, 1), (32, 0, 1)),
    ],
)
def test_invalid_launch_configuration(grid, block):
    with pytest.raises(RuntimeError, match="cudaErrorInvalidConfiguration"):
        fixtures.count_blocks(grid, block)
    # As under nvcc, the launch check has consumed the error.
    assert fixtures.last_error() == "cudaSuccess"


@requires_emulator
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
def test_cooperative_launch_runs_every_block_at_once(order, seed):
    # More blocks than the host has cores (os.cpu_count() is 2 in CI): an
    # ordinary launch would run some blocks only after others finish, and the
    # grid barrier would wait forever; a cooperative launch runs them all.
    blocks, threads, rounds = 8, 64, 5
    sums = fixtures.grid_rounds(blocks, threads, rounds, order, seed)
    expected = rounds * 1000 * blocks * (blocks - 1) // 2 + blocks * rounds * (rounds + 1) // 2
    assert sums == [expected] * blocks


@requires_emulator
def test_cooperative_launch_too_large():
    # 512 threads: 4 blocks per multiprocessor (2048 threads), 2 multiprocessors.
    assert len(fixtures.grid_rounds(8, 512, 1, "forward", 0)) == 8
    with pytest.raises(RuntimeError, match="cudaErrorCooperativeLaunchTooLarge.*at most 8 blocks"):
        fixtures.grid_rounds(9, 512, 1, "forward", 0)
    assert fixtures.last_error() == "cudaSuccess"


@requires_emulator
def test_every_block_runs_once():
    assert fixtures.count_blocks((5, 3, 2), (4, 4, 2)) == 30
    assert fixtures.count_blocks((1, 1, 1), (1024, 1, 1)) == 1


@requires_emulator
def test_dynamic_shared_memory_limits():
    n = 20000  # 80000 bytes: more than the default 48 KiB
    x = fresh_rng().standard_normal(n).astype(np.float32)
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue.*cudaFuncSetAttribute"):
        fixtures.reverse(x, 48 * 1024)
    np.testing.assert_array_equal(fixtures.reverse(x, n * 4), x[::-1])
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue.*cudaFuncSetAttribute"):
        fixtures.reverse(x, 232448 + 1)  # above the opt-in limit of compute capability 9.0
    assert fixtures.last_error() == "cudaErrorInvalidValue"  # a failing runtime call records it
    assert fixtures.last_error() == "cudaSuccess"  # and cudaGetLastError clears it
    with pytest.raises(RuntimeError, match="cudaErrorInvalidValue"):
        fixtures.count_blocks((1, 1, 1), (32, 1, 1), 48 * 1024 + 1)


@requires_emulator
def test_uninitialised_dynamic_shared_memory_is_poisoned():
    np.testing.assert_array_equal(fixtures.read_uninitialised(96), 0xFFFFFFFF)


@requires_emulator
def test_emulated_device_info():
    assert emu.unavailable_reason() == ""
    info = emu.info()
    assert info["runtime_version"] == 13000
    [device] = info["devices"]
    assert device["name"] == "dlkern CPU emulator"
    assert device["compute_capability"] == (9, 0)
    assert device["multiprocessors"] == 2


# ---------------------------------------------------- 16-bit conversions ---
@requires_emulator
def test_float16_conversions_match_numpy():
    every_half = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    as_float = fixtures.half_to_float(every_half)
    expected = every_half.view(np.float16).astype(np.float32)
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(
        as_float[finite].view(np.uint32), expected[finite].view(np.uint32)
    )
    assert np.isnan(as_float[~finite]).all()
    # Random float32 bit patterns, and every half value and the midpoints between.
    bits = fresh_rng().integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    midpoints = (expected[finite][:-1].astype(np.float64) + expected[finite][1:]) / 2
    values = np.concatenate(
        [
            bits.view(np.float32),
            expected[finite],
            midpoints.astype(np.float32),
            np.float32([np.inf, -np.inf, 65504, 65519.99, 65520, 2.0**-25, 2.0**-24, 3 * 2.0**-26]),
        ]
    )
    got = fixtures.float_to_half(values)
    with np.errstate(over="ignore"):  # large values round to inf, as intended
        want = values.astype(np.float16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan].view(np.uint16))
    np.testing.assert_array_equal(got[nan], 0x7FFF)  # the canonical NaN


@requires_emulator
def test_bfloat16_conversions_match_torch():
    torch = pytest.importorskip("torch")
    bits = fresh_rng().integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate(
        [bits.view(np.float32), np.float32([np.inf, -np.inf, 3.3895314e38, 1e-40])]
    )
    got = fixtures.float_to_bfloat16(values)
    want = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    np.testing.assert_array_equal(got[nan], 0x7FFF)
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    np.testing.assert_array_equal(
        fixtures.bfloat16_to_float(every).view(np.uint32), every.astype(np.uint32) << 16
    )


# -------------------------------------------------------- sanitizers ---
@requires_emulator
@pytest.mark.skipif(
    fixtures is not None and not fixtures.sanitizer_check,
    reason="the compiler cannot build with AddressSanitizer",
)
@pytest.mark.parametrize(
    "mode,returncode,report",
    [
        ("clean", 0, None),
        ("dynamic-smem", None, "AddressSanitizer: heap-buffer-overflow"),
        ("static-smem", None, "index 64 out of bounds for type 'float [64]'"),
    ],
)
def test_out_of_bounds_shared_memory_under_sanitizers(mode, returncode, report):
    # Leak checking needs ptrace, which containers often forbid, and is not the point here.
    env = {**os.environ, "UBSAN_OPTIONS": "print_stacktrace=1", "ASAN_OPTIONS": "detect_leaks=0"}
    program = Path(fixtures.__file__).parent / fixtures.sanitizer_check
    run = subprocess.run(
        [str(program), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    if returncode == 0:
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "ok"
        return
    assert run.returncode != 0
    assert report in run.stderr
    assert "oob_" in run.stderr and "smem_kernel" in run.stderr  # names the faulty kernel


# ------------------------------------------------ dlkern.testing switch ---
@requires_emulator
def test_cuda_emulation_routes_host_arrays_and_restores():
    cpu_module, cuda_path = _backend.for_device(("cpu", 0))
    assert not cuda_path
    with testing.cuda_emulation("reverse", 5) as module:
        assert module is emu
        assert _backend.for_device(("cpu", 0)) == (emu, True)
        assert emu.emu_schedule() == ("reverse", 5)
        with testing.cuda_emulation("shuffle", 9):
            assert emu.emu_schedule() == ("shuffle", 9)
        assert emu.emu_schedule() == ("reverse", 5)
        # Other threads keep the CPU path.
        seen = []
        thread = threading.Thread(target=lambda: seen.append(_backend.for_device(("cpu", 0))))
        thread.start()
        thread.join()
        assert seen == [(cpu_module, False)]
    assert _backend.for_device(("cpu", 0)) == (cpu_module, False)
    assert emu.emu_schedule() == ("forward", 0)


@requires_emulator
@pytest.mark.parametrize(
    "order,seed", [("sideways", 0), ("forward", -1), ("forward", 1.5), ("forward", True)]
)
def test_cuda_emulation_rejects_bad_arguments(order, seed):
    with pytest.raises(ValueError, match="cuda_emulation"), testing.cuda_emulation(order, seed):
        pass


# ------------------------------------------- dk.matmul on the emulator ---
def as_dtype(x: np.ndarray, dtype: str):
    """(the argument dk.matmul gets, its values in float64)."""
    if dtype == "bfloat16":
        torch = pytest.importorskip("torch")
        t = torch.from_numpy(x).to(torch.bfloat16)
        return t, t.to(torch.float64).numpy()
    y = x.astype(dtype)
    return y, y.astype(np.float64)


def to_numpy(result) -> np.ndarray:
    if isinstance(result, np.ndarray):
        return result.astype(np.float64)
    import torch

    return result.to(torch.float64).numpy()


TOLERANCE = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 2e-6, "float64": 1e-12}


@requires_emulator
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("order,seed", ORDERS, ids=ORDER_IDS)
@pytest.mark.parametrize(
    "a_shape,b_shape,transpose",
    [((37, 70), (70, 45), False), ((3, 20, 33), (3, 33, 65), False), ((81, 17), (17, 66), True)],
    ids=["2d", "batched", "strided"],
)
def test_matmul_on_emulator(dtype, order, seed, a_shape, b_shape, transpose):
    rng = fresh_rng()
    a_np = rng.standard_normal(a_shape).astype(np.float32)
    b_np = rng.standard_normal(b_shape).astype(np.float32)
    if transpose:  # non-contiguous operands: transposed views of (K, M) and (N, K)
        a_np = np.ascontiguousarray(a_np.T).T
        b_np = np.ascontiguousarray(b_np.T).T
    a, a_val = as_dtype(a_np, dtype)
    b, b_val = as_dtype(b_np, dtype)
    with testing.cuda_emulation(order, seed):
        out = dk.matmul(a, b)
    assert type(out) is type(a)
    assert str(out.dtype).removeprefix("torch.") == dtype
    expected = a_val @ b_val
    k = a_shape[-1]
    scale = np.sqrt(k)  # typical size of a sum of k unit products
    np.testing.assert_allclose(
        to_numpy(out), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale
    )


@requires_emulator
def test_matmul_float64_on_emulator():
    rng = fresh_rng()
    a, b = rng.standard_normal((29, 40)), rng.standard_normal((40, 31))
    with testing.cuda_emulation("shuffle", 3):
        out = dk.matmul(a, b)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
