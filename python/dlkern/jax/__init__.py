"""dlkern in JAX: each op as an XLA FFI custom call (handlers compiled into
dlkern's CPU and CUDA modules), differentiable through ``jax.custom_vjp`` with
dlkern's backward kernels, usable under ``jax.jit``, ``jax.grad`` and
``jax.vmap``.

    import dlkern.jax as dkj

Imported only when used: ``import dlkern`` never imports JAX. See docs/jax.md.
"""

from __future__ import annotations

from ._attention import attention, attention_varlen
from ._conv import avg_pool2d, conv2d, max_pool2d
from ._gmm import gmm_estep
from ._rnn import gru, gru_cell, lstm, lstm_cell
from ._tree import tree_compose, tree_lstm

__all__ = ["attention", "attention_varlen", "avg_pool2d", "conv2d", "gmm_estep", "gru", "gru_cell", "lstm",
           "lstm_cell", "max_pool2d", "tree_compose", "tree_lstm"]
