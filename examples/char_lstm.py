"""A character-level LSTM language model trained through dlkern.torch on the source of
a standard-library module, against a unigram model's validation loss.

    PYTHONPATH=python python examples/char_lstm.py [--epochs 8] [--compare]

Prints one line per epoch (train and validation loss, in nats per character) and
the final validation loss next to the unigram model's. ``--compare`` trains the same
model with torch's nn.LSTM from the same seed (same initial weights, same batches)
and prints its curve alongside.
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
import types

import torch

import dlkern.torch as dkt


def corpus(module: types.ModuleType = argparse):
    """(train, validation) index tensors of the module's source (the last
    tenth for validation) and the vocabulary size."""
    text = inspect.getsource(module)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text])
    cut = len(data) * 9 // 10
    return data[:cut], data[cut:], len(chars)


def unigram_loss(train: torch.Tensor, valid: torch.Tensor, vocab: int) -> float:
    """Validation cross-entropy of character frequencies in train (add-one smoothed)."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    return float(-(counts / counts.sum()).log()[valid].mean())


class CharModel(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int, lstm: type):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.lstm = lstm(hidden, hidden)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, x):  # x: (T, B) character indices
        out, _ = self.lstm(self.embed(x))
        return self.head(out)


def windows(data: torch.Tensor, starts: torch.Tensor, length: int):
    """(input, target) pairs, (length, batch), from the given start offsets."""
    offsets = starts.unsqueeze(0) + torch.arange(length + 1).unsqueeze(1)
    chunk = data[offsets]
    return chunk[:-1], chunk[1:]


def evaluate(model, data: torch.Tensor, length: int) -> float:
    """Mean next-character loss over the data cut into consecutive windows."""
    n = (len(data) - 1) // length
    x, y = windows(data, torch.arange(n) * length, length)
    with torch.no_grad():
        logits = model(x)
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   y.reshape(-1)))


def train(lstm: type = dkt.nn.LSTM, *, seed: int = 0, epochs: int = 8, steps: int = 60,
          batch: int = 32, length: int = 64, hidden: int = 96, lr: float = 4e-3,
          log=print) -> tuple[list[float], float]:
    """Trains the model; returns (validation loss after each epoch, unigram loss)."""
    train_data, valid, vocab = corpus()
    torch.manual_seed(seed)
    model = CharModel(vocab, hidden, lstm)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(seed)
    curve = []
    for epoch in range(1, epochs + 1):
        start, total = time.perf_counter(), 0.0
        for _ in range(steps):
            starts = torch.randint(len(train_data) - length - 1, (batch,), generator=batches)
            x, y = windows(train_data, starts, length)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
        curve.append(evaluate(model, valid, 256))
        log(f"epoch {epoch}: train loss {total / steps:.4f}, validation loss {curve[-1]:.4f} "
            f"({time.perf_counter() - start:.1f} s)")
    return curve, unigram_loss(train_data, valid, vocab)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true",
                        help="also train with torch.nn.LSTM from the same seed")
    args = parser.parse_args(argv)
    curve, unigram = train(epochs=args.epochs, steps=args.steps, seed=args.seed)
    print(f"dlkern LSTM: validation loss {curve[-1]:.4f} nats/char, unigram model "
          f"{unigram:.4f} ({math.exp(curve[-1]):.2f} vs {math.exp(unigram):.2f} perplexity)")
    if args.compare:
        ref, _ = train(torch.nn.LSTM, epochs=args.epochs, steps=args.steps, seed=args.seed,
                       log=lambda line: print("torch.nn.LSTM", line))
        gap = max(abs(a - b) for a, b in zip(curve, ref))
        print(f"torch.nn.LSTM: validation loss {ref[-1]:.4f}; largest gap between the "
              f"curves {gap:.4f} nats/char")


if __name__ == "__main__":
    main()
