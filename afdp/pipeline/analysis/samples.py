"""One side of an analysis (baseline or impact): its finite samples and their description.

:class:`SampleStats` keeps the finite samples, counts the dropped (non-finite or
non-numeric) ones and describes them: mean, median, min, max, standard deviation, p50,
p95, p99.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SampleStats:
    """The finite samples of one side and their description.

    ``count`` finite samples were kept, ``dropped`` non-finite (or non-numeric) ones
    removed. The statistics are None when ``count`` is 0; ``stdev`` (sample standard
    deviation) when ``count`` < 2.
    """

    values: np.ndarray = field(repr=False, compare=False)
    count: int
    dropped: int
    mean: float | None
    median: float | None
    min: float | None
    max: float | None
    stdev: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, samples: Sequence[float] | None) -> SampleStats:
        """Return the statistics of ``samples`` after dropping non-finite values."""
        raw = _as_floats(samples)
        finite = raw[np.isfinite(raw)]
        dropped = int(raw.size - finite.size)
        if finite.size == 0:
            return cls(finite, 0, dropped, None, None, None, None, None, None, None, None)
        p50, p95, p99 = (float(v) for v in np.percentile(finite, [50, 95, 99]))
        return cls(
            values=finite,
            count=int(finite.size),
            dropped=dropped,
            mean=float(np.mean(finite)),
            median=float(np.median(finite)),
            min=float(np.min(finite)),
            max=float(np.max(finite)),
            stdev=float(np.std(finite, ddof=1)) if finite.size > 1 else None,
            p50=p50,
            p95=p95,
            p99=p99,
        )

    @property
    def constant(self) -> bool:
        """Return True when every sample has the same value (or there are none)."""
        return self.count == 0 or self.min == self.max

    def to_json(self) -> dict[str, Any]:
        """Return the description (without the samples themselves)."""
        return {
            "mean": self.mean,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "stdev": self.stdev,
        }


def _as_floats(samples: Any) -> np.ndarray:
    if samples is None:
        return np.empty(0, dtype=float)
    values = getattr(samples, "values", None)
    if callable(values) and not isinstance(samples, np.ndarray):
        samples = values()  # a collector's MetricData: its sample values
    try:
        return np.asarray(samples, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        out = []
        for value in samples:
            try:
                out.append(float(value) if not isinstance(value, bool) else math.nan)
            except (TypeError, ValueError):
                out.append(math.nan)  # not a number: dropped and counted like NaN
        return np.asarray(out, dtype=float)
