"""``--plot DIR``: one PNG per op family, dlkern's throughput vs the references and the roofline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .report import Run, threads_cell

_UNITS = {"flops": "FLOP/s", "bytes": "B/s"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(run: Run, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    families = dict.fromkeys(r.case.family for r in run.results)
    for family in families:
        results = [r for r in run.results if r.case.family == family]
        metrics = list(dict.fromkeys(r.case.metric for r in results))
        width_in = max(6, 1.4 * len(results) + 2)
        fig, axes = plt.subplots(len(metrics), 1, figsize=(width_in, 4.5 * len(metrics)), squeeze=False)
        for ax, metric in zip(axes[:, 0], metrics, strict=True):
            rs = [r for r in results if r.case.metric == metric]
            libs = ["dlkern"] + [lib for lib in run.references if any(lib in r.timings for r in rs)]
            x = np.arange(len(rs))
            width = 0.8 / len(libs)
            bounds = [run.peaks.roofline(r.case) for r in rs]
            top = max([b or 0 for b in bounds] + [r.throughput(lib) or 0 for r in rs for lib in libs])
            scale, prefix = (1e12, "T") if top >= 1e12 else (1e9, "G")
            for i, lib in enumerate(libs):
                values = [(r.throughput(lib) or 0) / scale for r in rs]
                ax.bar(x - 0.4 + width * (i + 0.5), values, width, label=lib)
            drawn = [(i, b) for i, b in enumerate(bounds) if b]
            for j, (i, bound) in enumerate(drawn):
                ax.hlines(bound / scale, i - 0.45, i + 0.45, colors="black", linestyles="--",
                          label="roofline" if j == 0 else None)
            for i, r in enumerate(rs):
                if r.failed:
                    ax.text(i, 0, "FAILED", color="red", ha="center", va="bottom", rotation=90)
            labels = [f"{r.case.name}\n{r.case.dtype}"
                      + (f", {threads_cell(r)} thr" if r.case.threads is not None else "") for r in rs]
            ax.set_xticks(x, labels, fontsize=8)
            ax.set_ylabel(prefix + _UNITS[metric])
            ax.set_title(f"{family} on {run.device}: dlkern vs references and the roofline")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = directory / f"{family}-{run.device}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
