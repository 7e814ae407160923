"""A small CNN trained on scikit-learn's 8x8 digits with dlkern's layers and
Adam, NumPy arrays only: conv -> relu -> pool -> conv -> relu -> pool -> linear.

    python examples/cnn_digits.py [--epochs 15] [--threads 2]

Prints one line per epoch (training loss, test accuracy, seconds) and the
final test accuracy.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import dlkern as dk
from dlkern import layers

def model(rng):
    return layers.Sequential(
        layers.Conv2d(1, 32, 3, padding=1, rng=rng), layers.ReLU(), layers.MaxPool2d(2),
        layers.Conv2d(32, 64, 3, padding=1, rng=rng), layers.ReLU(), layers.MaxPool2d(2),
        layers.Flatten(), layers.Linear(64 * 2 * 2, 10, rng=rng))


def accuracy(net, x, y, batch=512):
    predicted = np.concatenate([net.forward(x[i:i + batch]).argmax(1)
                                for i in range(0, len(x), batch)])
    return float((predicted == y).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of dlkern's CPU kernels (default: dlkern's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    args = parser.parse_args(argv)
    if args.threads is not None:
        dk.set_num_threads(args.threads)

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    rng = np.random.default_rng(args.seed)
    net = model(rng)
    loss_fn = layers.CrossEntropyLoss()
    optimizer = layers.Adam(net, lr=args.lr)

    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        # cosine decay of the step size: the last epochs settle instead of oscillating
        optimizer.lr = args.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / args.epochs))
        order = rng.permutation(len(x_train))
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn.forward(net.forward(x_train[batch]), y_train[batch])
            net.backward(loss_fn.backward())
            optimizer.step()
            total += float(loss) * len(batch)
        print(f"epoch {epoch:2d}  loss {total / len(order):.4f}  "
              f"test accuracy {accuracy(net, x_test, y_test):.4f}  "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    print(f"final test accuracy {accuracy(net, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
