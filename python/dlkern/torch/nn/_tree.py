"""``TreeLSTM`` and ``TreeCompose``: modules holding the parameters of dlkern's tree ops.

Parameters and their layout (H hidden size, N arity, I node-input size), as
``dk.tree_lstm`` and ``dk.tree_compose`` take them:

* TreeLSTM: ``w_iou`` (3H, I), ``u_iou`` (3H, N H), ``w_f`` (H, I), ``u_f``
  (N H, N H), ``b_iou`` (3H,), ``b_f`` (H,); gate rows in the order i, o, u;
* TreeCompose: ``weight`` (H, N H), ``bias`` (H,).

All initialised uniform in +-1/sqrt(H), as torch initialises an LSTM.
"""

import math

import torch

from .. import _tree


class _Tree(torch.nn.Module):
    def _parameters_of(self, shapes: dict, bias: bool, factory_kwargs: dict) -> None:
        for name, shape in shapes.items():
            if name.startswith("b") and not bias:
                self.register_parameter(name, None)
            else:
                setattr(self, name, torch.nn.Parameter(torch.empty(shape, **factory_kwargs)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            torch.nn.init.uniform_(p, -bound, bound)


class TreeLSTM(_Tree):
    """The N-ary Tree-LSTM over a forest: ``forward(leaves, children, node_inputs=None)``
    returns every node's ``(h, c)`` (dk.tree_lstm; ``leaves`` an h or a pair (h, c))."""

    def __init__(self, input_size: int, hidden_size: int, arity: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.arity = input_size, hidden_size, arity
        H, N, I = hidden_size, arity, input_size
        self._parameters_of({"w_iou": (3 * H, I), "u_iou": (3 * H, N * H), "w_f": (H, I),
                             "u_f": (N * H, N * H), "b_iou": (3 * H,), "b_f": (H,)},
                            bias, {"device": device, "dtype": dtype})

    def forward(self, leaves, children, node_inputs=None):
        return _tree.tree_lstm(leaves, children, self.w_iou, self.u_iou, self.w_f, self.u_f,
                               self.b_iou, self.b_f, node_inputs=node_inputs)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, arity={self.arity}"


class TreeCompose(_Tree):
    """Each internal node ``activation(weight @ [h_c1; ...; h_cN] + bias)``:
    ``forward(leaves, children)`` returns every node's vector (dk.tree_compose)."""

    def __init__(self, hidden_size: int, arity: int, activation: str = "tanh",
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.hidden_size, self.arity, self.activation = hidden_size, arity, activation
        self._parameters_of({"weight": (hidden_size, arity * hidden_size),
                             "bias": (hidden_size,)}, bias, {"device": device, "dtype": dtype})

    def forward(self, leaves, children):
        return _tree.tree_compose(leaves, children, self.weight, self.bias,
                                  activation=self.activation)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, arity={self.arity}, activation={self.activation!r}"
