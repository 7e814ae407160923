"""dlkern in PyTorch: every op as a ``torch.library`` custom op under ``torch.ops.dlkern``,
with fake (meta) kernels for ``torch.compile`` and autograd wired to dlkern's
backward kernels, and ``nn`` modules that load torch's state dicts unchanged.

    import dlkern.torch as dkt

Imported only when used: ``import dlkern`` never imports torch. See docs/torch.md.
"""

from __future__ import annotations

# Each module registers its family's torch.ops.dlkern.* ops on import and
# exports the differentiable functions.

# -- convolution, pooling, attention, Gaussian mixtures --
from ._attention import attention, attention_varlen
from ._conv import avg_pool2d, conv2d, matmul, max_pool2d
from ._gmm import gmm_estep

# -- recurrent and recursive networks --
from ._rnn import gru, gru_cell, lstm, lstm_cell  # noqa: E402
from ._tree import tree_compose, tree_lstm  # noqa: E402

from . import nn  # noqa: E402
