"""dlkern: hand-written CUDA and C++ kernels for deep learning: conv2d, max/avg pooling, matmul,
LSTM and GRU cells and sequences, scaled-dot-product attention, Gaussian mixtures.

``import dlkern as dk``; every function takes NumPy, CuPy or DLPack arrays
(torch, JAX) and returns the caller's kind on the caller's device.
"""

from ._version import __version__
from ._cmake import get_cmake_dir
from ._config import (
    cuda_available,
    cuda_unavailable_reason,
    get_num_threads,
    set_num_threads,
    show_config,
)
from .attention import (
    attention,
    attention_backward,
    attention_varlen,
    attention_varlen_backward,
)
from .conv import conv2d, conv2d_backward
from .gmm import gmm_estep, gmm_mstep, gmm_precisions_cholesky
from .matmul import matmul
from .pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward
from .rnn import (
    gru,
    gru_backward,
    gru_cell,
    gru_cell_backward,
    lstm,
    lstm_backward,
    lstm_cell,
    lstm_cell_backward,
)
from .tree import (
    TreeLevels,
    tree_compose,
    tree_compose_backward,
    tree_levels,
    tree_lstm,
    tree_lstm_backward,
)

__all__ = [
    "__version__",
    "GaussianMixture",
    "attention",
    "attention_backward",
    "attention_varlen",
    "attention_varlen_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d",
    "conv2d_backward",
    "gmm_estep",
    "gmm_mstep",
    "gmm_precisions_cholesky",
    "cuda_available",
    "cuda_unavailable_reason",
    "get_cmake_dir",
    "get_num_threads",
    "gru",
    "gru_backward",
    "gru_cell",
    "gru_cell_backward",
    "lstm",
    "lstm_backward",
    "lstm_cell",
    "lstm_cell_backward",
    "matmul",
    "max_pool2d",
    "max_pool2d_backward",
    "set_num_threads",
    "show_config",
    "TreeLevels",
    "tree_compose",
    "tree_compose_backward",
    "tree_levels",
    "tree_lstm",
    "tree_lstm_backward",
]


def __getattr__(name):
    # The estimator's module imports scikit-learn's base classes when they are
    # installed: loaded on first use, not with dlkern.
    if name == "GaussianMixture":
        from .mixture import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module 'dlkern' has no attribute {name!r}")
