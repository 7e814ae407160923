"""Layers for training with NumPy or CuPy arrays alone, on dlkern's kernels.

``from dlkern import layers``. Each layer holds its parameters and their
gradients, named and shaped as the matching torch module's ``state_dict``;
``forward`` keeps what ``backward`` needs, ``backward(grad_output)``
accumulates the parameter gradients and returns the input's. Arrays are
NumPy (CPU kernels) or CuPy (CUDA kernels, after ``layer.to("cuda")``).
See docs/layers.md.
"""

from ._attention import Attention
from ._base import Flatten, Layer, ReLU, Sequential
from ._conv import AvgPool2d, Conv2d, MaxPool2d
from ._linear import Linear
from ._loss import CrossEntropyLoss
from ._optim import SGD, Adam
from ._rnn import GRU, LSTM
from ._tree import TreeLSTM

__all__ = ["Adam", "Attention", "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Flatten", "GRU",
           "LSTM", "Layer", "Linear", "MaxPool2d", "ReLU", "SGD", "Sequential", "TreeLSTM"]
