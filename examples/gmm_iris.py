"""A Gaussian mixture fitted to the iris flowers with dk.GaussianMixture:
prints the clusters' agreement with the species (adjusted Rand index) and
draws them, with each component's covariance ellipse, on the data's first
two principal components.

    python examples/gmm_iris.py [--out gmm_iris.png]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

import dlkern as dk  # noqa: E402


def principal_axes(X):
    """The data's mean and its two leading principal directions (D, 2)."""
    mean = X.mean(0)
    _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
    return mean, vt[:2].T


def ellipse(mean, cov, color):
    """The 2-standard-deviation ellipse of a 2-D Gaussian."""
    values, vectors = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
    width, height = 2 * 2 * np.sqrt(values[::-1])
    return Ellipse(mean, width, height, angle=angle, fill=False, color=color, lw=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gmm_iris.png", help="the PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    iris = load_iris()
    X, species = iris.data, iris.target
    gmm = dk.GaussianMixture(n_components=3, covariance_type="full", n_init=5,
                             random_state=args.seed).fit(X)
    labels = gmm.predict(X)
    print(f"converged {gmm.converged_} after {gmm.n_iter_} iterations, "
          f"mean log-likelihood {gmm.score(X):.4f}")
    print(f"adjusted Rand index {adjusted_rand_score(species, labels):.4f}")

    mean, axes = principal_axes(X)
    Z = (X - mean) @ axes
    fig, ax = plt.subplots(figsize=(6, 5))
    colors = ["tab:blue", "tab:orange", "tab:green"]
    for k in range(3):
        ax.scatter(*Z[labels == k].T, s=14, color=colors[k], label=f"component {k}")
        ax.add_patch(ellipse((gmm.means_[k] - mean) @ axes, axes.T @ gmm.covariances_[k] @ axes,
                             colors[k]))
    ax.set(xlabel="first principal component", ylabel="second principal component",
           title="dk.GaussianMixture on iris (ellipses: 2 standard deviations)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
