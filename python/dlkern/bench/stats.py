"""Summary statistics of timing samples."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Seconds per call over ``repetitions`` timed calls (percentiles interpolate linearly)."""

    median: float
    p20: float
    p80: float
    min: float
    max: float
    mean: float
    repetitions: int
    samples: tuple

    def to_dict(self) -> dict:
        d = asdict(self)
        d["samples"] = list(self.samples)
        return d


def summarize(samples) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize: no samples")
    p20, median, p80 = np.percentile(x, [20, 50, 80])
    return Summary(
        median=float(median),
        p20=float(p20),
        p80=float(p80),
        min=float(x.min()),
        max=float(x.max()),
        mean=float(x.mean()),
        repetitions=int(x.size),
        samples=tuple(float(s) for s in x),
    )
