"""Serial dependence of time-ordered samples, which the statistical tests correct for.

:class:`Dependence` holds the pooled lag-1 autocorrelation and the AR(1) variance
inflation (effective sample size) a test uses; :func:`_test_dependence` estimates it on
what a method reads (pooled ranks for ``mann_whitney``, the values for ``welch_t``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from afdp.pipeline.analysis.samples import SampleStats


@dataclass(frozen=True)
class Dependence:
    """How dependent consecutive samples are, and how much the test allows for it.

    ``lag1`` is the pooled lag-1 autocorrelation of the series the test reads (the
    pooled ranks for ``mann_whitney``, the values for ``welch_t``), each side centred on
    its own mean; ``lag1_used`` the value the correction uses (0 when ``lag1`` is not
    significantly positive, else ``lag1`` plus the Marriott-Pope small-sample bias
    ``(1 + 4 r) / n``, at most :data:`MAX_LAG1`). ``inflation`` = ``(1 + r) / (1 - r)``
    with ``r = lag1_used`` (the AR(1) integrated autocorrelation time): each side holds
    about ``count / inflation`` independent samples (``n_effective``).
    ``degrees_of_freedom`` is the Student-t reference the corrected test uses (None when
    no correction was needed).
    """

    method: str
    lag1: float | None
    lag1_used: float
    inflation: float
    n_baseline: int
    n_impact: int
    degrees_of_freedom: float | None = None

    @property
    def corrected(self) -> bool:
        """Return True when the test's variance was inflated for dependent samples."""
        return self.inflation > 1.0

    @property
    def n_effective_baseline(self) -> float:
        """Return about how many independent samples the baseline holds."""
        return self.n_baseline / self.inflation

    @property
    def n_effective_impact(self) -> float:
        """Return about how many independent samples the impact holds."""
        return self.n_impact / self.inflation

    def to_json(self) -> dict[str, Any]:
        """Return what was estimated and done, as evidence."""
        return {
            "method": self.method,
            "lag1_autocorrelation": self.lag1,
            "lag1_used": self.lag1_used,
            "variance_inflation": self.inflation,
            "n": {"baseline": self.n_baseline, "impact": self.n_impact},
            "n_effective": {
                "baseline": round(self.n_effective_baseline, 3),
                "impact": round(self.n_effective_impact, 3),
            },
            "degrees_of_freedom": self.degrees_of_freedom,
        }


# The correction's cap on the lag-1 autocorrelation: an inflation of at most 199.
MAX_LAG1 = 0.99
# One-sided 5% critical value of the lag-1 autocorrelation of white noise (times 1/sqrt(n)).
_LAG1_CRITICAL_Z = 1.6448536269514722
DEPENDENCE_METHOD = "ar1_effective_sample_size"
INDEPENDENT_METHOD = "independent"


def _dependence(baseline: np.ndarray, impact: np.ndarray) -> Dependence:
    """Estimate the serial dependence of two time-ordered series (see :class:`Dependence`).

    The lag-1 autocorrelation is pooled over both sides (each centred on its own mean, so
    a shift between them is not mistaken for dependence). It counts only when it is
    significantly positive for white noise (``r > 1.645 / sqrt(n_b + n_i)``); then the
    Marriott-Pope bias of the estimate, ``-(1 + 4 r) / n`` per side, is added back
    (short series underestimate it, which would make the test too liberal).
    """
    numerator = denominator = 0.0
    for side in (baseline, impact):
        if side.size < 3 or float(np.min(side)) == float(np.max(side)):
            continue  # a constant side says nothing about dependence
        centred = side - float(np.mean(side))
        numerator += float(np.dot(centred[:-1], centred[1:]))
        denominator += float(np.dot(centred, centred))
    total = baseline.size + impact.size
    lag1 = numerator / denominator if denominator > 0 and math.isfinite(denominator) else None
    if lag1 is not None and not math.isfinite(lag1):
        lag1 = None
    used = 0.0
    if lag1 is not None and total > 0 and lag1 > _LAG1_CRITICAL_Z / math.sqrt(total):
        used = min(lag1 + (1.0 + 4.0 * lag1) / (total / 2.0), MAX_LAG1)
    inflation = (1.0 + used) / (1.0 - used)
    if used == 0.0:
        return Dependence(INDEPENDENT_METHOD, lag1, 0.0, 1.0, baseline.size, impact.size)
    effective = total / inflation
    return Dependence(
        DEPENDENCE_METHOD,
        lag1,
        used,
        inflation,
        baseline.size,
        impact.size,
        max(effective - 2.0, 1.0),
    )


def _test_dependence(method: str, base: SampleStats, imp: SampleStats) -> Dependence:
    """Return the dependence of what ``method`` reads: pooled ranks, or the values."""
    if method == "mann_whitney":
        from afdp.pipeline.analysis.distributions import rank_average

        ranks = rank_average(np.concatenate([base.values, imp.values]))
        return _dependence(ranks[: base.count], ranks[base.count :])
    found = _dependence(base.values, imp.values)
    if not found.corrected:
        return found
    # Welch: the Welch-Satterthwaite degrees of freedom from the effective counts.
    parts = [
        float(np.var(side.values, ddof=1)) / n
        for side, n in ((imp, found.n_effective_impact), (base, found.n_effective_baseline))
    ]
    ns = (found.n_effective_impact, found.n_effective_baseline)
    below = sum(part**2 / max(n - 1.0, 1.0) for part, n in zip(parts, ns, strict=True))
    df = sum(parts) ** 2 / below if below > 0 and math.isfinite(below) else None
    if df is None or not math.isfinite(df):
        df = found.degrees_of_freedom
    return replace(found, degrees_of_freedom=df)
