"""A Tree-LSTM trained through dlkern.torch to predict the sign of generated
arithmetic expressions (digits -9..9 but 0, combined with +, - and *) from their
parse trees; reports test accuracy.

    PYTHONPATH=python python examples/tree_sign.py [--epochs 12]

Each batch is one forest: every tree's leaves (digit embeddings as the leaves' h),
then every operator node (its operator's embedding as the node input) in
topological order. The classifier reads the root's h. Prints one line per epoch
and the final test accuracy.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

import dlkern.torch as dkt

DIGITS = [d for d in range(-9, 10) if d != 0]
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def expression(rng: random.Random, max_leaves: int):
    """(digits, nodes, value): a random tree over 2..max_leaves digits, each node
    (op, left, right) indexing [digits; nodes]; value nonzero."""
    while True:
        digits = [rng.choice(DIGITS) for _ in range(rng.randint(2, max_leaves))]
        roots, values, nodes = list(range(len(digits))), list(digits), []
        while len(roots) > 1:  # merge two neighbours: every binary tree shape occurs
            k = rng.randrange(len(roots) - 1)
            op = rng.choice(list(OPS))
            left, right = roots[k], roots[k + 1]
            nodes.append((op, left, right))
            values.append(OPS[op](values[left], values[right]))
            roots[k:k + 2] = [len(values) - 1]
        if values[-1] != 0:
            return digits, nodes, values[-1]


def dataset(n: int, seed: int, max_leaves: int = 5) -> list:
    rng = random.Random(seed)
    return [expression(rng, max_leaves) for _ in range(n)]


def forest(trees: list):
    """One forest for a batch: (digit tokens, children, operator tokens, root
    indices, labels) as tensors; label 1 for a positive value."""
    n_leaves = sum(len(d) for d, _, _ in trees)
    tokens, children, ops, roots, labels = [], [], [], [], []
    leaf_base, node_base = 0, n_leaves
    for digits, nodes, value in trees:
        # A tree's index i is its leaf leaf_base + i or its node node_base + (i - len(digits)).
        where = [leaf_base + i for i in range(len(digits))]
        where += [node_base + j for j in range(len(nodes))]
        tokens += [DIGITS.index(d) for d in digits]
        for op, left, right in nodes:
            children.append([where[left], where[right]])
            ops.append(list(OPS).index(op))
        roots.append(where[-1])
        labels.append(int(value > 0))
        leaf_base += len(digits)
        node_base += len(nodes)
    return (torch.tensor(tokens), torch.tensor(children), torch.tensor(ops),
            torch.tensor(roots), torch.tensor(labels))


class SignModel(torch.nn.Module):
    def __init__(self, hidden: int, op_size: int = 8):
        super().__init__()
        self.digits = torch.nn.Embedding(len(DIGITS), hidden)
        self.ops = torch.nn.Embedding(len(OPS), op_size)
        self.tree = dkt.nn.TreeLSTM(op_size, hidden, arity=2)
        self.head = torch.nn.Linear(hidden, 2)

    def forward(self, tokens, children, ops, roots):
        h, _ = self.tree(self.digits(tokens), children, node_inputs=self.ops(ops))
        return self.head(h[roots])


def accuracy(model, batches: list) -> float:
    correct = total = 0
    with torch.no_grad():
        for tokens, children, ops, roots, labels in batches:
            correct += int((model(tokens, children, ops, roots).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def train(*, epochs: int = 12, n_train: int = 6000, n_test: int = 1000, batch: int = 100,
          hidden: int = 64, lr: float = 1e-2, seed: int = 0, log=print) -> float:
    """Trains the model; returns the test accuracy."""
    torch.manual_seed(seed)
    train_set, test_set = dataset(n_train, seed), dataset(n_test, seed + 1)
    test_batches = [forest(test_set[i:i + batch]) for i in range(0, n_test, batch)]
    model = SignModel(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = random.Random(seed)
    for epoch in range(1, epochs + 1):
        start, total = time.perf_counter(), 0.0
        order.shuffle(train_set)
        for i in range(0, n_train, batch):
            tokens, children, ops, roots, labels = forest(train_set[i:i + batch])
            loss = torch.nn.functional.cross_entropy(model(tokens, children, ops, roots), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        log(f"epoch {epoch}: train loss {total / (n_train // batch):.4f}, test accuracy "
            f"{accuracy(model, test_batches):.3f} ({time.perf_counter() - start:.1f} s)")
    return accuracy(model, test_batches)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"test accuracy {train(epochs=args.epochs, seed=args.seed):.3f}")


if __name__ == "__main__":
    main()
