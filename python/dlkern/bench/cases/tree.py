"""The tree family (float32): on the CPU ``dk.tree_compose`` and
``dk.tree_lstm`` over a forest of random binary trees, forward and
forward+backward, against the same model in torch written level by level
(``torch``: per level one index_select of the children's rows and one
matmul, torch at its best) and node by node (``torch-nodes``); and a chain
(depth = its length) beside an LSTM sequence of the same length and width.
On CUDA the forest and the chain, forward and forward+backward, without
references.

FLOPs are the GEMMs' multiply-adds only, so % of peak is a lower bound on the
GEMM part's own fraction (the gathers and pointwise passes take time too):
tree_compose's forward is 2 n_internal H (arity H), tree_lstm's 2 n_internal
(3 + N) H (N H); a backward adds twice the forward's (the children's
gradients and the weight gradients).
"""

from __future__ import annotations

import numpy as np

import dlkern as dk

from ...testing import reference
from .. import libraries
from ..registry import Case, Context
from ._factory import array_libraries, case, kind_for

# (trees, leaves per tree, H); the chain's (length, H).
FOREST = (256, 64, 256)
FOREST_QUICK = (8, 8, 32)
CHAIN = (4096, 256)
CHAIN_QUICK = (64, 32)
ARITY = 2
PASSES = ("forward", "forward+backward")


def flop_count(op: str, n_internal: int, hidden: int, arity: int, backward: bool) -> int:
    """A multiply and an add per term of each level's product (module docstring)."""
    rows = (3 + arity) * hidden if op == "tree_lstm" else hidden
    forward = 2 * n_internal * rows * arity * hidden
    return 3 * forward if backward else forward


def byte_count(op: str, n_leaves: int, n_internal: int, hidden: int, arity: int,
               itemsize: int) -> int:
    """The least traffic of a forward: the leaves and the weights read, every
    node's output written (tree_lstm: h and c)."""
    rows = (3 + arity) * hidden if op == "tree_lstm" else hidden
    states = 2 if op == "tree_lstm" else 1
    return itemsize * (n_leaves * hidden * states + rows * (arity * hidden + 1)
                       + states * (n_leaves + n_internal) * hidden)


def random_forest(trees: int, leaves_per_tree: int, seed: int) -> tuple[np.ndarray, int]:
    """Binary trees grown by merging two random roots of a random tree at a
    time (random shapes, depths mixed); nodes of different trees interleave."""
    rng = np.random.default_rng(seed)
    pools = [list(range(t * leaves_per_tree, (t + 1) * leaves_per_tree)) for t in range(trees)]
    n_leaves = trees * leaves_per_tree
    children = []
    open_trees = [t for t in range(trees) if len(pools[t]) > 1]
    while open_trees:
        t = open_trees[rng.integers(len(open_trees))]
        pool = pools[t]
        children.append([pool.pop(rng.integers(len(pool))) for _ in range(ARITY)])
        pool.append(n_leaves + len(children) - 1)
        if len(pool) == 1:
            open_trees.remove(t)
    return np.array(children, dtype=np.int64), n_leaves


def chain(length: int) -> tuple[np.ndarray, int]:
    """Node i's children: node i - 1 (leaf 0 for the first) and leaf i + 1,
    like a recurrent step reading one input per step: depth = length."""
    n_leaves = length + 1
    prev = np.concatenate([[0], n_leaves + np.arange(length - 1)])
    return np.stack([prev, np.arange(1, length + 1)], axis=1), n_leaves


class _Levels:
    """The forest as the level-batched torch versions read it: a table of
    rows (leaves, a zero row for missing children, then each level's nodes),
    per level the children's rows, and each node's row in the table."""

    def __init__(self, children: np.ndarray, n_leaves: int):
        torch = libraries.get("torch")
        lv = dk.tree_levels(children, n_leaves)
        row = np.empty(n_leaves + len(children) + 1, dtype=np.int64)
        row[:n_leaves] = np.arange(n_leaves)
        row[-1] = n_leaves  # -1 (a missing child) reads the zero row
        self.rows = n_leaves + 1 + len(children)
        self.gather, self.spans = [], []
        base = n_leaves + 1
        for l in range(lv.n_levels):
            nodes = lv.level(l)
            self.gather.append(torch.from_numpy(row[children[nodes - n_leaves]].reshape(-1)))
            row[nodes] = base + np.arange(len(nodes))
            self.spans.append((base, base + len(nodes)))
            base += len(nodes)
        self.order = torch.from_numpy(row[:-1].copy())


def _torch_compose_nodes(children, v):
    torch = libraries.get("torch")
    rows = list(v["leaves"])
    zero = torch.zeros(v["weight"].shape[0], dtype=v["weight"].dtype)
    for ch in children.tolist():
        x = torch.cat([rows[c] if c >= 0 else zero for c in ch])
        rows.append(torch.tanh(torch.addmv(v["bias"], v["weight"], x)))
    return torch.stack(rows)


def _torch_compose_levels(levels: _Levels, v):
    torch = libraries.get("torch")
    leaves, w = v["leaves"], v["weight"]
    table = torch.zeros(levels.rows, w.shape[0], dtype=w.dtype)
    table[:leaves.shape[0]] = leaves
    for idx, (r0, r1) in zip(levels.gather, levels.spans):
        x = table.index_select(0, idx).view(r1 - r0, -1)
        table[r0:r1] = torch.tanh(torch.addmm(v["bias"], x, w.t()))
    return table.index_select(0, levels.order)


def _lstm_weights(v):
    return [v[n] for n in ("w_iou", "u_iou", "w_f", "u_f", "b_iou", "b_f")]


def _torch_lstm_nodes(children, v):
    torch = libraries.get("torch")
    _, u_iou, _, u_f, b_iou, b_f = _lstm_weights(v)
    H = v["leaves"].shape[1]
    hs, cs = list(v["leaves"]), [torch.zeros(H)] * v["leaves"].shape[0]
    zero = torch.zeros(H)
    b_f = b_f.repeat(ARITY)
    for ch in children.tolist():
        x = torch.cat([hs[c] if c >= 0 else zero for c in ch])
        iou = torch.addmv(b_iou, u_iou, x)
        f = torch.sigmoid(torch.addmv(b_f, u_f, x))
        c = torch.sigmoid(iou[:H]) * torch.tanh(iou[2 * H:])
        for k, child in enumerate(ch):
            if child >= 0:
                c = c + f[k * H:(k + 1) * H] * cs[child]
        hs.append(torch.sigmoid(iou[H:2 * H]) * torch.tanh(c))
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


def _torch_lstm_levels(levels: _Levels, v):
    torch = libraries.get("torch")
    _, u_iou, _, u_f, b_iou, b_f = _lstm_weights(v)
    leaves = v["leaves"]
    H = leaves.shape[1]
    u_all, b_all = torch.cat([u_iou, u_f]), torch.cat([b_iou, b_f.repeat(ARITY)])
    table_h = torch.zeros(levels.rows, H)
    table_c = torch.zeros(levels.rows, H)
    table_h[:leaves.shape[0]] = leaves
    for idx, (r0, r1) in zip(levels.gather, levels.spans):
        n = r1 - r0
        g = torch.addmm(b_all, table_h.index_select(0, idx).view(n, -1), u_all.t())
        cc = table_c.index_select(0, idx).view(n, ARITY, H)
        f = torch.sigmoid(g[:, 3 * H:]).view(n, ARITY, H)
        c = torch.sigmoid(g[:, :H]) * torch.tanh(g[:, 2 * H:3 * H]) + (f * cc).sum(1)
        table_h[r0:r1] = torch.sigmoid(g[:, H:2 * H]) * torch.tanh(c)
        table_c[r0:r1] = c
    return table_h.index_select(0, levels.order), table_c.index_select(0, levels.order)


def _with_backward(forward, grads, params):
    """A torch call timed as the case times it: the forward, and with grads the
    gradients of its outputs (grads) with respect to params, by autograd."""
    def call(v):
        torch = libraries.get("torch")
        if not grads:
            with torch.no_grad():
                return forward(v)
        w = {k: (t.detach().requires_grad_() if k in params else t) for k, t in v.items()}
        outs = forward(w)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return torch.autograd.grad(outs, [w[p] for p in params], [v[g] for g in grads])
    return call


def _scaled(name: str, scale: float):
    return lambda v: v[name] * np.float32(scale)


def _compose_run(children, levels, backward: bool):
    """dlkern's call of a tree_compose case: the forward, and with backward
    the gradients of grad (every node's) instead."""
    def run(v):
        out = dk.tree_compose(v["leaves"], children, v["weight"], v["bias"], levels=levels)
        if not backward:
            return out
        return dk.tree_compose_backward(v["grad"], out, children, v["weight"], levels=levels)
    return run


def _compose_expected(children, backward: bool):
    """The float64 reference of _compose_run's result."""
    def expected(v):
        out = reference.tree_compose(v["leaves"], children, v["weight"], v["bias"])
        if not backward:
            return out
        return reference.tree_compose_backward(v["grad"], out, children, v["weight"])
    return expected


def _compose_case(ctx: Context, which: str, trees: int, per_tree: int, H: int, refs,
                  kind: str = "numpy") -> Case:
    backward = which == "forward+backward"
    children, n_leaves = random_forest(trees, per_tree, trees * 1000 + per_tree)
    levels = dk.tree_levels(children, n_leaves)
    n_nodes = n_leaves + len(children)
    inputs = {"leaves": (n_leaves, H), "w": (H, ARITY * H), "b": (H,),
              # 1 / sqrt(fan-in) like torch's init: activations not saturated.
              "weight": _scaled("w", (ARITY * H) ** -0.5), "bias": _scaled("b", 0.1)}
    if backward:
        inputs["grad"] = (n_nodes, H)

    torch_levels = _Levels(children, n_leaves) if refs else None
    grads, params = (["grad"], ["leaves", "weight", "bias"]) if backward else ([], [])
    references = {}
    if refs:
        references = {
            "torch-nodes": _with_backward(lambda v: _torch_compose_nodes(children, v), grads,
                                          params),
            "torch": _with_backward(lambda v: _torch_compose_levels(torch_levels, v),
                                           grads, params),
        }
    return case(
        ctx, "tree", f"tree_compose {trees}x{per_tree} h{H} {which}", dtype="float32",
        kind=kind,
        params={"op": "tree_compose", "pass": which, "trees": trees, "leaves_per_tree": per_tree,
                "hidden_size": H, "arity": ARITY, "n_levels": levels.n_levels},
        flops=flop_count("tree_compose", len(children), H, ARITY, backward),
        bytes=byte_count("tree_compose", n_leaves, len(children), H, ARITY, 4),
        inputs=inputs, run=_compose_run(children, levels, backward),
        expected=_compose_expected(children, backward), references=references,
    )


def _lstm_case(ctx: Context, which: str, trees: int, per_tree: int, H: int, refs,
               kind: str = "numpy") -> Case:
    backward = which == "forward+backward"
    children, n_leaves = random_forest(trees, per_tree, trees * 1000 + per_tree)
    levels = dk.tree_levels(children, n_leaves)
    n_nodes = n_leaves + len(children)
    K = ARITY * H
    inputs = {"leaves": (n_leaves, H), "wi": (3 * H, 1), "ui": (3 * H, K), "wf": (H, 1),
              "uf": (K, K), "bi": (3 * H,), "bf": (H,)}
    for name, raw, scale in (("w_iou", "wi", 1.0), ("u_iou", "ui", K ** -0.5),
                             ("w_f", "wf", 1.0), ("u_f", "uf", K ** -0.5), ("b_iou", "bi", 0.1),
                             ("b_f", "bf", 0.1)):
        inputs[name] = _scaled(raw, scale)
    if backward:
        inputs.update({"grad_h": (n_nodes, H), "grad_c": (n_nodes, H)})

    def run(v):
        if not backward:
            return dk.tree_lstm(v["leaves"], children, *_lstm_weights(v), levels=levels)
        h, c, saved = dk.tree_lstm(v["leaves"], children, *_lstm_weights(v), levels=levels,
                                   save_for_backward=True)
        (g_h, g_c), _, _, g_u_iou, _, g_u_f, g_b_iou, g_b_f = dk.tree_lstm_backward(
            v["grad_h"], v["grad_c"], h, c, saved, children, *_lstm_weights(v)[:4],
            levels=levels)
        return g_h, g_u_iou, g_u_f, g_b_iou, g_b_f

    def expected(v):
        if not backward:
            return reference.tree_lstm(v["leaves"], children, *_lstm_weights(v))
        (g_h, _), _, _, g_u_iou, _, g_u_f, g_b_iou, g_b_f = reference.tree_lstm_backward(
            v["grad_h"], v["grad_c"], v["leaves"], children, *_lstm_weights(v))
        return g_h, g_u_iou, g_u_f, g_b_iou, g_b_f

    torch_levels = _Levels(children, n_leaves) if refs else None
    grads = ["grad_h", "grad_c"] if backward else []
    params = ["leaves", "u_iou", "u_f", "b_iou", "b_f"] if backward else []
    references = {}
    if refs:
        references = {
            "torch-nodes": _with_backward(lambda v: _torch_lstm_nodes(children, v), grads, params),
            "torch": _with_backward(lambda v: _torch_lstm_levels(torch_levels, v), grads,
                                           params),
        }
    return case(
        ctx, "tree", f"tree_lstm {trees}x{per_tree} h{H} {which}", dtype="float32", kind=kind,
        params={"op": "tree_lstm", "pass": which, "trees": trees, "leaves_per_tree": per_tree,
                "hidden_size": H, "arity": ARITY, "n_levels": levels.n_levels},
        flops=flop_count("tree_lstm", len(children), H, ARITY, backward),
        bytes=byte_count("tree_lstm", n_leaves, len(children), H, ARITY, 4),
        inputs=inputs, run=run, expected=expected, references=references,
    )


def _chain_compose_case(ctx: Context, which: str, length: int, H: int,
                        kind: str = "numpy") -> Case:
    """tree_compose over a chain (depth = length)."""
    backward = which == "forward+backward"
    children, n_leaves = chain(length)
    levels = dk.tree_levels(children, n_leaves)
    inputs = {"leaves": (n_leaves, H), "w": (H, ARITY * H), "b": (H,),
              "weight": _scaled("w", (ARITY * H) ** -0.5), "bias": _scaled("b", 0.1)}
    if backward:
        inputs["grad"] = (n_leaves + length, H)

    return case(
        ctx, "tree", f"tree_compose chain {length} h{H} {which}", dtype="float32", kind=kind,
        params={"op": "tree_compose", "pass": which, "chain": length, "hidden_size": H,
                "arity": ARITY, "n_levels": levels.n_levels},
        flops=flop_count("tree_compose", length, H, ARITY, backward),
        bytes=byte_count("tree_compose", n_leaves, length, H, ARITY, 4),
        inputs=inputs, run=_compose_run(children, levels, backward),
        expected=_compose_expected(children, backward), references={},
    )


def _chain_cases(ctx: Context, length: int, H: int, passes=("forward",),
                 kind: str = "numpy") -> list[Case]:
    """tree_compose over a chain (each of passes), and dk.lstm over a sequence
    of the same length and width (batch 1, input size H), to compare their times."""
    compose = [_chain_compose_case(ctx, p, length, H, kind) for p in passes]
    scale = np.float32(H ** -0.5)
    lstm = case(
        ctx, "tree", f"lstm T{length} 1x{H} h{H} forward (the chain's yardstick)",
        dtype="float32", kind=kind,
        params={"op": "lstm", "pass": "forward", "seq_len": length, "batch": 1,
                "input_size": H, "hidden_size": H},
        flops=2 * length * 4 * H * 2 * H, bytes=4 * (length * 2 * H + 8 * H * H),
        inputs={"x": (length, 1, H), "wi": (4 * H, H), "wh": (4 * H, H),
                "w_ih": lambda v: v["wi"] * scale, "w_hh": lambda v: v["wh"] * scale},
        run=lambda v: dk.lstm(v["x"], None, v["w_ih"], v["w_hh"])[0],
        expected=lambda v: reference.lstm(v["x"], None, v["w_ih"], v["w_hh"])[0],
        references={},
    )
    return compose + [lstm]


def _cuda_cases(ctx: Context) -> list[Case]:
    """The forest and the chain in float32 on CUDA arrays, forward and
    forward+backward, and the chain's LSTM yardstick, without references (the
    torch versions above run on the CPU): timings for docs/tree-cuda.md."""
    kind = kind_for(ctx, "float32", "tree", prefer=("cupy", "torch"))
    if kind is None:
        return []
    trees, per_tree, H = FOREST_QUICK if ctx.quick else FOREST
    length, chain_h = CHAIN_QUICK if ctx.quick else CHAIN
    return ([_compose_case(ctx, p, trees, per_tree, H, False, kind) for p in PASSES]
            + [_lstm_case(ctx, p, trees, per_tree, H, False, kind) for p in PASSES]
            + _chain_cases(ctx, length, chain_h, PASSES, kind))


def cases(ctx: Context) -> list[Case]:
    if ctx.device == "cuda":
        return _cuda_cases(ctx)
    refs = "torch" in array_libraries(ctx, "float32")
    trees, per_tree, H = FOREST_QUICK if ctx.quick else FOREST
    length, chain_h = CHAIN_QUICK if ctx.quick else CHAIN
    return ([_compose_case(ctx, p, trees, per_tree, H, refs) for p in PASSES]
            + [_lstm_case(ctx, p, trees, per_tree, H, refs) for p in PASSES]
            + _chain_cases(ctx, length, chain_h))
