"""dlkern.torch's gmm_estep op: equal to dk.gmm_estep bit for bit (whose values
test_gmm and test_gmm_cuda bound against scikit-learn), torch.library.opcheck for every covariance
type, the refused gradient, bad arguments and CUDA (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import dlkern as dk
from test_gmm import TYPES, check_estep, random_problem
from test_torch_conv import one_thread  # noqa: F401  (autouse)

torch = pytest.importorskip("torch")
dkt = pytest.importorskip("dlkern.torch")

CUDA = torch.cuda.is_available() and dk.cuda_available()


def problem(rng, covariance_type, dtype="float64", N=23, D=3, K=4):
    arrays = random_problem(rng, N, D, K, covariance_type)
    return [np.asarray(a, dtype) for a in arrays]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_gmm_estep_is_dk_gmm_estep(rng, dtype, covariance_type):
    arrays = problem(rng, covariance_type, dtype)
    expected = check_estep(*arrays, covariance_type)  # within the bounds of scikit-learn's
    X, *params = (torch.from_numpy(a) for a in arrays)
    got = dkt.gmm_estep(X.T.contiguous().T, *params, covariance_type)  # strided samples
    for g, e in zip(got, expected):
        assert g.dtype == X.dtype
        np.testing.assert_array_equal(g.numpy(), e)  # the same kernel


def test_gmm_estep_opcheck(rng):
    for covariance_type in TYPES:
        X, *params = (torch.from_numpy(a) for a in problem(rng, covariance_type, N=9, D=2, K=3))
        torch.library.opcheck(torch.ops.dlkern.gmm_estep,
                              (X.T.contiguous().T, *params, covariance_type))


def test_gmm_estep_gradient_is_refused(rng):
    X, *params = (torch.from_numpy(a) for a in problem(rng, "diag"))
    log_resp, norm = dkt.gmm_estep(X.requires_grad_(), *params, "diag")
    with pytest.raises(RuntimeError, match="no backward kernel"):
        norm.sum().backward()
    with torch.no_grad():
        assert not dkt.gmm_estep(X, *params, "diag")[0].requires_grad


def test_gmm_estep_bad_arguments(rng):
    X, w, m, p = (torch.from_numpy(a) for a in problem(rng, "full"))
    cases = [
        (lambda: dkt.gmm_estep(X.numpy(), w, m, p), TypeError, "X must be a torch.Tensor"),
        (lambda: dkt.gmm_estep(X, w, m, p, covariance_type=1), TypeError, "covariance_type"),
        (lambda: dkt.gmm_estep(X, w, m, p, "fuller"), ValueError, "covariance_type"),
        (lambda: dkt.gmm_estep(X, w, m[:, :2], p), ValueError, "means"),
        (lambda: dkt.gmm_estep(X.float(), w, m, p), TypeError, "dtype"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no torch CUDA device dlkern can use")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_cuda_gmm_estep(rng, covariance_type):
    arrays = [torch.from_numpy(a).cuda() for a in problem(rng, covariance_type, "float32")]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # dlkern runs on torch's current stream
        got = dkt.gmm_estep(*arrays, covariance_type)
        expected = dk.gmm_estep(*arrays, covariance_type)  # bounded by test_gmm_cuda
    torch.cuda.synchronize()
    for g, e in zip(got, expected):
        assert g.is_cuda and torch.equal(g, e)  # the same kernel
