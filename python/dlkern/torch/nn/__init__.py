"""``torch.nn.Module`` wrappers over dlkern's torch ops: each loads the state dict of
the torch module it is named after unchanged, so a model swaps a layer in one line."""

from __future__ import annotations

# -- convolution, pooling, attention --
from ._attention import MultiheadAttention
from ._conv import AvgPool2d, Conv2d, MaxPool2d

# -- recurrent --
from ._rnn import GRU, LSTM, GRUCell, LSTMCell
from ._tree import TreeCompose, TreeLSTM
