"""The statistical tests of impact against baseline, and their effect sizes.

``mann_whitney``: the Mann-Whitney U test (two-sided and one-sided in the worse
direction), Cliff's delta and the Hodges-Lehmann shift with its distribution-free
interval; ``welch_t``: Welch's t-test, Cohen's d and the mean difference's interval. Both
are corrected for serially dependent samples. Each gives a :class:`TestResult`.
Their reference distributions come from :mod:`afdp.pipeline.analysis.distributions`
(scipy's numbers without importing ``scipy.stats``, except for Welch's test on
independent samples and the exact Mann-Whitney distribution of small samples).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from afdp.pipeline.analysis import distributions
from afdp.pipeline.analysis.dependence import Dependence
from afdp.pipeline.analysis.samples import SampleStats

# Effect sizes below these are "negligible" (Romano et al. 2006 for Cliff's delta,
# Cohen 1988 for d): a significant but negligible shift does not degrade a metric.
TRIVIAL_CLIFFS_DELTA = 0.147
TRIVIAL_COHENS_D = 0.2
# Pairwise differences for the Hodges-Lehmann shift: beyond this many pairs, each side
# is reduced to evenly spaced quantiles first (deterministic, error far below sample noise).
MAX_PAIRS = 4_000_000
_QUANTILE_POINTS = 2000


@dataclass(frozen=True)
class TestResult:
    """One statistical test of impact against baseline.

    ``p_value`` is two-sided; ``p_value_worse`` one-sided in the metric's worse
    direction (None with ``better: none``). ``effect_size`` is Cliff's delta
    (``mann_whitney``) or Cohen's d (``welch_t``), signed impact minus baseline;
    ``shift`` the Hodges-Lehmann shift or the mean difference, in the metric's unit,
    with its ``shift_interval`` at the analysis's confidence (None when undefined).
    ``p_value`` is None when the test is undefined for these samples (``reason``).
    """

    method: str
    statistic: float | None
    p_value: float | None
    p_value_worse: float | None
    alternative_worse: str | None
    effect_size_name: str
    effect_size: float | None
    shift_name: str
    shift: float | None
    trivial_below: float
    reason: str | None = None
    shift_interval: tuple[float, float] | None = None
    confidence: float | None = None

    @property
    def trivial(self) -> bool | None:
        """Return True when the effect size is negligible (None when unknown)."""
        if self.effect_size is None:
            return None
        return abs(self.effect_size) < self.trivial_below

    def to_json(self) -> dict[str, Any]:
        """Return the test as evidence."""
        return {
            "method": self.method,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_value_worse": self.p_value_worse,
            "alternative_worse": self.alternative_worse,
            "effect_size": {
                "name": self.effect_size_name,
                "value": self.effect_size,
                "trivial_below": self.trivial_below,
                "trivial": self.trivial,
            },
            "shift": {
                "name": self.shift_name,
                "value": self.shift,
                "interval": list(self.shift_interval) if self.shift_interval else None,
                "confidence": self.confidence,
            },
            "reason": self.reason,
        }


def _worse_alternative(better: str) -> str | None:
    # scipy's alternative for "impact is worse than baseline", with x=impact, y=baseline.
    return {"lower": "greater", "higher": "less"}.get(better)


def _mann_whitney(
    base: SampleStats,
    imp: SampleStats,
    better: str,
    confidence: float,
    dependence: Dependence | None = None,
) -> TestResult:
    x, y = imp.values, base.values
    worse = _worse_alternative(better)
    delta_shift, low, high = _location_shift(x, y, confidence, dependence)
    interval = (low, high) if low is not None and high is not None else None
    if base.constant and imp.constant and base.min == imp.min:
        return TestResult(
            "mann_whitney",
            None,
            1.0,
            1.0 if worse else None,
            worse,
            "cliffs_delta",
            0.0,
            "hodges_lehmann",
            0.0,
            TRIVIAL_CLIFFS_DELTA,
            "every sample on both sides has the same value: the test is undefined, "
            "p-value taken as 1 (no difference)",
            interval,
            confidence,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = distributions.mannwhitneyu(x, y, "two-sided")
        one = distributions.mannwhitneyu(x, y, worse) if worse else None
    u = float(two.statistic)  # U of the impact sample
    cliffs = 2.0 * u / (x.size * y.size) - 1.0
    p_two = _finite(two.pvalue)
    p_worse = _finite(one.pvalue) if one is not None else None
    if dependence is not None and dependence.corrected:
        p_two, p_worse = _mann_whitney_dependent(x, y, u, worse, dependence)
    return TestResult(
        "mann_whitney",
        u,
        p_two,
        p_worse,
        worse,
        "cliffs_delta",
        cliffs,
        "hodges_lehmann",
        delta_shift,
        TRIVIAL_CLIFFS_DELTA,
        None,
        interval,
        confidence,
    )


def _mann_whitney_dependent(
    x: np.ndarray, y: np.ndarray, u: float, worse: str | None, dependence: Dependence
) -> tuple[float | None, float | None]:
    """Return (two-sided, worse-sided) p-values of U for serially dependent samples.

    U's variance (with the tie correction) is multiplied by ``dependence.inflation``: U
    is asymptotically a sum of one term per sample (its Hajek projection), whose
    variance grows by the integrated autocorrelation time when the terms are
    dependent. The statistic (with continuity correction) is read against Student's t
    with ``dependence.degrees_of_freedom``, because the variance is estimated from only
    about ``n_effective`` independent pieces of information.
    """
    n1, n2 = x.size, y.size
    total = n1 + n2
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    tie_term = float(np.sum(ties.astype(float) ** 3 - ties)) / (total * (total - 1))
    variance = n1 * n2 / 12.0 * ((total + 1) - tie_term) * dependence.inflation
    if not variance > 0:
        return None, None
    sd = math.sqrt(variance)
    centred = u - n1 * n2 / 2.0
    df = dependence.degrees_of_freedom or float(total - 2)
    two = min(1.0, 2.0 * distributions.t_sf(max(abs(centred) - 0.5, 0.0) / sd, df))
    if worse == "greater":
        one: float | None = distributions.t_sf((centred - 0.5) / sd, df)
    elif worse == "less":
        one = distributions.t_cdf((centred + 0.5) / sd, df)
    else:
        one = None
    return _finite(two), (_finite(one) if one is not None else None)


def _hodges_lehmann(x: np.ndarray, y: np.ndarray) -> float:
    """Return the median of all pairwise differences x_i - y_j."""
    return _location_shift(x, y, None)[0]


def _location_shift(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float | None,
    dependence: Dependence | None = None,
) -> tuple[float, float | None, float | None]:
    """Return the Hodges-Lehmann shift of x over y and its confidence interval.

    The interval is the distribution-free one that goes with the Mann-Whitney test:
    the C-th smallest and largest pairwise differences, C = n1*n2/2 - z*sqrt(n1*n2*
    (n1+n2+1)/12) (normal approximation, ties ignored). For dependent samples the
    variance under the root is multiplied by the dependence's inflation and z is
    Student's t quantile at its degrees of freedom, as in the test. None when the
    samples are too small for that confidence.
    """
    total = x.size * y.size
    if total > MAX_PAIRS:
        grid = np.linspace(0, 100, _QUANTILE_POINTS)
        x_used = np.percentile(x, grid) if x.size > _QUANTILE_POINTS else x
        y_used = np.percentile(y, grid) if y.size > _QUANTILE_POINTS else y
    else:
        x_used, y_used = x, y
    differences = np.subtract.outer(x_used, y_used).ravel()
    size = differences.size
    middle = size // 2
    wanted = {middle} if size % 2 else {middle - 1, middle}
    low_index: int | None = None
    if confidence is not None:
        level = 1.0 - (1.0 - confidence) / 2.0
        inflation = 1.0
        if dependence is not None and dependence.corrected:
            inflation = dependence.inflation
            z = distributions.t_ppf(level, dependence.degrees_of_freedom or 1.0)
        else:
            z = distributions.norm_ppf(level)
        spread = math.sqrt(total * (x.size + y.size + 1) / 12.0 * inflation)
        rank = math.floor(total / 2.0 - z * spread)
        if rank >= 1:
            low_index = min(int((rank - 1) / total * size), middle)
            wanted |= {low_index, size - 1 - low_index}
    differences.partition(sorted(wanted))  # in place: no second copy of the pairs
    if size % 2:
        shift = float(differences[middle])
    else:
        shift = float((differences[middle - 1] + differences[middle]) / 2.0)
    if low_index is None:
        return shift, None, None
    low = _finite(differences[low_index])
    high = _finite(differences[size - 1 - low_index])
    return (shift, low, high) if low is not None and high is not None else (shift, None, None)


def _welch(
    base: SampleStats,
    imp: SampleStats,
    better: str,
    confidence: float,
    dependence: Dependence | None = None,
) -> TestResult:
    x, y = imp.values, base.values
    worse = _worse_alternative(better)
    assert imp.mean is not None and base.mean is not None
    difference = imp.mean - base.mean
    var_x = float(np.var(x, ddof=1))
    var_y = float(np.var(y, ddof=1))
    if imp.constant and base.constant:
        if imp.min == base.min:
            return TestResult(
                "welch_t",
                None,
                1.0,
                1.0 if worse else None,
                worse,
                "cohens_d",
                0.0,
                "mean_difference",
                0.0,
                TRIVIAL_COHENS_D,
                "every sample on both sides has the same value: the test is undefined, "
                "p-value taken as 1 (no difference)",
            )
        return TestResult(
            "welch_t",
            None,
            None,
            None,
            worse,
            "cohens_d",
            None,
            "mean_difference",
            difference,
            TRIVIAL_COHENS_D,
            "each side is constant but they differ: Welch's t-test is undefined with zero "
            "variance; judge this metric by its thresholds",
        )
    spread = math.sqrt((var_x + var_y) / 2.0)
    if dependence is not None and dependence.corrected:
        statistic, p_two, p_worse, low, high = _welch_dependent(
            difference, var_x, var_y, worse, confidence, dependence
        )
    else:
        # Only here is scipy.stats imported (about a second of CPU): its Welch test and
        # interval are used as they are.
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            two = stats.ttest_ind(x, y, equal_var=False, alternative="two-sided")
            one = stats.ttest_ind(x, y, equal_var=False, alternative=worse) if worse else None
            try:
                ci = two.confidence_interval(confidence_level=confidence)
                low, high = _finite(ci.low), _finite(ci.high)
            except (ValueError, ArithmeticError):
                low = high = None
        statistic = _finite(two.statistic)
        p_two = _finite(two.pvalue)
        p_worse = _finite(one.pvalue) if one is not None else None
    return TestResult(
        "welch_t",
        statistic,
        p_two,
        p_worse,
        worse,
        "cohens_d",
        difference / spread if spread > 0 else None,
        "mean_difference",
        difference,
        TRIVIAL_COHENS_D,
        None,
        (low, high) if low is not None and high is not None else None,
        confidence,
    )


def _welch_dependent(
    difference: float,
    var_x: float,
    var_y: float,
    worse: str | None,
    confidence: float,
    dependence: Dependence,
) -> tuple[float | None, float | None, float | None, float | None, float | None]:
    """Return Welch's (t, two-sided p, worse-sided p, interval low, high) with each
    side's sample count replaced by its effective count and the dependence's degrees of
    freedom (Welch-Satterthwaite from the effective counts). All None when the variance
    is 0.
    """
    n_x, n_y = dependence.n_effective_impact, dependence.n_effective_baseline
    part_x, part_y = var_x / n_x, var_y / n_y
    se2 = part_x + part_y
    if not (se2 > 0 and math.isfinite(se2)):
        return None, None, None, None, None
    se = math.sqrt(se2)
    df = dependence.degrees_of_freedom or max(n_x + n_y - 2.0, 1.0)
    t_value = difference / se
    two = min(1.0, 2.0 * distributions.t_sf(abs(t_value), df))
    one: float | None = None
    if worse == "greater":
        one = distributions.t_sf(t_value, df)
    elif worse == "less":
        one = distributions.t_cdf(t_value, df)
    half = distributions.t_ppf(1.0 - (1.0 - confidence) / 2.0, df) * se
    return (
        _finite(t_value),
        _finite(two),
        _finite(one) if one is not None else None,
        _finite(difference - half),
        _finite(difference + half),
    )


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None
