"""Baseline against impact: how much each metric moved, whether that matters, and why.

:func:`analyze` compares, metric by metric, the samples captured before a deployment
(baseline) with those captured after it (impact), as an ``analyze_differences`` /
``compare`` / ``statistical_comparison`` step of a workflow asks. The result is evidence:
every number, the test that was run, each threshold with what was observed, and a
``reasons`` list whenever something could not be computed. Nothing is ever a silent pass.

Definitions (these are what workflow conditions read, see
:data:`afdp.workflow.catalog.ANALYSIS_FIELDS`):

- **central value** (``baseline``, ``impact``): the *median* of each side's samples,
  because latency-like series are skewed and spiky and a median is robust to a few
  outliers; with ``method: welch_t`` it is the *mean*, the quantity that test compares.
- ``increase`` = impact - baseline, in the metric's unit, signed (negative when it fell);
  ``decrease`` = baseline - impact = -increase. So ``x.increase < 10ms`` also holds when
  ``x`` improved, and ``revenue.decrease > $1000_per_hour`` only when it fell that much.
- ``change`` = (impact - baseline) / |baseline|, a signed ratio (``12%``); ``factor`` =
  impact / baseline (``1.5x``). Both are null (with a reason) when the baseline is 0 and
  the impact is not; when both are 0 nothing moved: change 0%, factor 1x.
- **test** (when the analysis has a ``method``): ``mann_whitney`` is the Mann-Whitney U
  test (two-sided, and one-sided in the metric's worse direction), with Cliff's delta
  (equal to the rank-biserial correlation) and the Hodges-Lehmann shift as effect sizes,
  as Kayenta's judge does, and the shift's distribution-free confidence interval;
  ``welch_t`` is Welch's t-test (unequal variances) with Cohen's d (standard deviation
  averaged over both sides) as the effect size and the mean difference's interval. ``p_value`` is the
  two-sided p-value; ``significant`` is ``p_value < 1 - confidence``. A test needs at
  least ``max(min_samples, 2)`` finite samples on each side.
- a **threshold** is exceeded when the observed movement is strictly greater than its
  limit, compared in base units (seconds, fractions, currency per second):
  ``absolute`` limits the difference, ``relative`` the difference as a fraction of the
  baseline, ``factor`` the ratio (impact/baseline for ``increase``, baseline/impact for
  ``decrease``, the larger of both for ``change``). A relative or factor threshold whose
  ratio has a zero denominator cannot be evaluated: ``exceeded`` is null, with a reason.
- ``degraded`` joins *practical* significance (how much movement matters, which only
  the workflow's thresholds can say) with *statistical* significance (the movement is
  not noise). A threshold *watches* the metric when it looks at its worse direction
  (``increase`` for ``better: lower``, ``decrease`` for ``better: higher``) or at
  ``change``; with ``better: none`` every threshold watches it. ``decided_by`` records
  which rule applied:

  * ``threshold_and_test`` -- some threshold watches the metric and the test ran on
    enough independent samples: ``degraded`` is true only when a watching threshold is
    exceeded with the central value moved the worse way, *and* the test confirms a
    worse shift: the one-sided ``p_value_worse < 1 - confidence`` (the two-sided
    ``p_value`` with ``better: none``). A significant shift within the user's limit is
    not a degradation (the user said that much does not matter), and neither is a limit
    exceeded by noise. No effect-size bound applies: the threshold is the bound.
  * ``threshold`` -- some threshold watches the metric but no test ran (no ``method``,
    too few samples, or a test undefined for these samples): an exceeded watching
    threshold alone degrades the metric. A threshold not exceeded gives false without
    a ``method``; with a test that could not run it stays null (unknown).
  * ``test`` -- no threshold watches the metric and a test is configured: ``degraded``
    is true when the effect points the worse way, the change is ``significant``
    (two-sided, at ``confidence``) *and* the effect is not trivial (``|Cliff's delta|
    >= 0.147`` or ``|Cohen's d| >= 0.2``, the conventional "negligible" bounds), as
    Kayenta's judge does. With no real change a metric is falsely degraded this way at
    most ``(1 - confidence) / 2`` of the time (2.5% at 0.95). Null when the test could
    not run.
  * ``nothing`` -- neither a watching threshold nor a test (or ``better: none`` with no
    threshold): ``degraded`` is false and ``reasons`` say nothing could degrade it.

  Whatever cannot be computed gives null, never a silent pass: no data, too few
  (independent) samples for the test when no threshold decides, a watching threshold
  that could not be evaluated (unless the test already rules the degradation out).
  ``significant_degradation`` equals ``degraded`` when a test ran and took part in the
  decision, and is null otherwise.
- **dependent samples**: both tests assume independent samples, but series sampled
  faster than they change are autocorrelated (a Prometheus range query with a 1 s step
  over ``rate(...[5s])`` repeats most of each window in the next sample; a gauge
  drifts), and treating them as independent makes p-values far too small. Before the
  test, the pooled lag-1 autocorrelation ``r`` of what the test reads (the pooled ranks
  for ``mann_whitney``, the values for ``welch_t``; each side centred on its own mean)
  is estimated. When it is significantly positive for white noise (``r > 1.645 /
  sqrt(n_b + n_i)``), the small-sample bias ``(1 + 4r)/n`` (Marriott and Pope) is added
  back and the AR(1) integrated autocorrelation time ``(1 + r) / (1 - r)`` is the
  variance inflation: each side holds ``n_effective = n / inflation`` independent
  samples (Bretherton et al. 1999; Wilks, *Statistical Methods in the Atmospheric
  Sciences*). Mann-Whitney's U variance and Welch's per-side variances are inflated by
  it, and p-values and intervals are read against Student's t with degrees of freedom
  from the effective counts (``n_b + n_i`` effective minus 2; Welch-Satterthwaite for
  ``welch_t``), because so few independent pieces make the normal reference too
  liberal. Effect sizes (Cliff's delta, Cohen's d, the shifts) describe the raw samples
  and are unchanged. With fewer than ``max(min_samples, 2)`` *effective* samples on a
  side the test is not run (``insufficient_samples``, with a reason). For moving
  averages (overlapping rate windows) the lag-1 estimate is conservative (it
  overstates the inflation). Samples are taken to be in time order, as collectors
  return them. ``independence`` in each metric records ``method``
  (``independent`` or ``ar1_effective_sample_size``), the estimated and used lag-1
  autocorrelations, the inflation, ``n`` and ``n_effective`` per side and the degrees
  of freedom.

Edge cases, each explicit in ``status`` and ``reasons``:

- no samples on either side (or the metric missing because its collection failed):
  ``status: no_data``; every derived field is null and ``degraded`` is null.
- fewer than ``max(min_samples, 2)`` samples on a side when a test is configured:
  ``status: insufficient_samples``; the test is not run (``p_value``/``significant``
  null) but central values, changes and thresholds are still computed on what exists,
  so a limit that is clearly exceeded still degrades the metric; otherwise ``degraded``
  is null. The same holds when a side has enough samples but too few *effective* ones
  (dependent samples, see above).
- NaN and infinite samples are dropped before anything is computed and counted in
  ``counts.baseline_dropped`` / ``counts.impact_dropped``.
- identical constant series (every sample on both sides the same value): the test is
  undefined; ``p_value`` is 1 and nothing is significant, with a reason. Welch's test
  with zero variance on both sides but different values is undefined too: ``p_value``
  and ``significant`` are null, with a reason.

Summary (top-level names in conditions, :data:`~afdp.workflow.catalog.ANALYSIS_SUMMARY`):
``any_degradation`` is true if any metric is degraded, null if none is but some are
unknown, else false; ``significant_degradation`` the same for degradations found by the
test (null when the analysis runs no test); ``all_metrics_within_normal`` is true only
when every metric is known not degraded and no threshold is exceeded (in either
direction); ``exceeded`` lists metrics with an exceeded threshold; ``inconclusive``
lists metrics whose ``degraded`` is unknown. A condition that reads a null fails to
evaluate, and the decision step records that instead of passing.

No correction for multiple comparisons is applied (as in Kayenta): with many metrics at
``confidence: 0.95`` expect an occasional significant result by chance; the effect-size
bound keeps such results from counting when the shift is negligible, and a watching
threshold keeps them from counting when the shift is within what the user allows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from afdp.evidence.canonical import json_safe
from afdp.workflow.units import Quantity, Unit

if TYPE_CHECKING:
    from afdp.workflow.model import Analyze, Metric, Threshold, Workflow

SCHEMA = "analysis.v1"

# Effect sizes below these are "negligible" (Romano et al. 2006 for Cliff's delta,
# Cohen 1988 for d): a significant but negligible shift does not degrade a metric.
TRIVIAL_CLIFFS_DELTA = 0.147
TRIVIAL_COHENS_D = 0.2
# Pairwise differences for the Hodges-Lehmann shift: beyond this many pairs, each side
# is reduced to evenly spaced quantiles first (deterministic, error far below sample noise).
MAX_PAIRS = 4_000_000
_QUANTILE_POINTS = 2000

# What decided ``degraded`` (recorded as ``decided_by``).
DECIDED_BY_THRESHOLD_AND_TEST = "threshold_and_test"
DECIDED_BY_THRESHOLD = "threshold"
DECIDED_BY_TEST = "test"
DECIDED_BY_NOTHING = "nothing"

STATUS_OK = "ok"
STATUS_NO_DATA = "no_data"
STATUS_INSUFFICIENT = "insufficient_samples"

_CHANGE_UNIT = Unit("%", "ratio", 0.01)
_FACTOR_UNIT = Unit("x", "ratio", 1.0)


# --- per side -------------------------------------------------------------------------


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


# --- serial dependence ----------------------------------------------------------------


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
        from scipy.stats import rankdata

        ranks = rankdata(np.concatenate([base.values, imp.values]))
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


# --- the statistical test -------------------------------------------------------------


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
    from scipy import stats

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
        two = stats.mannwhitneyu(x, y, alternative="two-sided", method="auto")
        one = stats.mannwhitneyu(x, y, alternative=worse, method="auto") if worse else None
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
    from scipy import stats

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
    two = min(1.0, 2.0 * float(stats.t.sf(max(abs(centred) - 0.5, 0.0) / sd, df)))
    if worse == "greater":
        one: float | None = float(stats.t.sf((centred - 0.5) / sd, df))
    elif worse == "less":
        one = float(stats.t.cdf((centred + 0.5) / sd, df))
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
        from scipy.stats import norm, t

        level = 1.0 - (1.0 - confidence) / 2.0
        inflation = 1.0
        if dependence is not None and dependence.corrected:
            inflation = dependence.inflation
            z = float(t.ppf(level, dependence.degrees_of_freedom or 1.0))
        else:
            z = float(norm.ppf(level))
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
    from scipy import stats

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
    from scipy import stats

    n_x, n_y = dependence.n_effective_impact, dependence.n_effective_baseline
    part_x, part_y = var_x / n_x, var_y / n_y
    se2 = part_x + part_y
    if not (se2 > 0 and math.isfinite(se2)):
        return None, None, None, None, None
    se = math.sqrt(se2)
    df = dependence.degrees_of_freedom or max(n_x + n_y - 2.0, 1.0)
    t_value = difference / se
    two = min(1.0, 2.0 * float(stats.t.sf(abs(t_value), df)))
    one: float | None = None
    if worse == "greater":
        one = float(stats.t.sf(t_value, df))
    elif worse == "less":
        one = float(stats.t.cdf(t_value, df))
    half = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, df)) * se
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


# --- thresholds -----------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdResult:
    """One threshold checked against the observed movement.

    ``observed`` is the movement in the limit's unit (``12.5`` for 12.5ms against
    ``10ms``; a fraction-based ratio in ``%`` for relative limits; ``x`` for factors),
    None when it cannot be computed (``reason``). ``exceeded`` is ``observed > limit``
    in base units, None when unknown. ``watches_worse`` is True when the threshold
    looks at the metric's worse direction (so exceeding it is a degradation).
    """

    key: str
    direction: str
    mode: str
    limit: Quantity
    observed: float | None
    exceeded: bool | None
    watches_worse: bool
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the threshold, its limit and what was observed."""
        return {
            "key": self.key,
            "direction": self.direction,
            "mode": self.mode,
            "limit": self.limit.to_json(),
            "observed": self.observed,
            "unit": self.limit.unit.symbol,
            "exceeded": self.exceeded,
            "watches_worse": self.watches_worse,
            "reason": self.reason,
        }


def _check_threshold(
    threshold: Threshold, metric: Metric, baseline: float | None, impact: float | None
) -> ThresholdResult:
    worse_dir = {"lower": "increase", "higher": "decrease"}.get(metric.better)
    watches = metric.better == "none" or threshold.direction in ("change", worse_dir)

    def result(observed_base: float | None, reason: str | None = None) -> ThresholdResult:
        if observed_base is None:
            return ThresholdResult(
                threshold.key,
                threshold.direction,
                threshold.mode,
                threshold.limit,
                None,
                None,
                watches,
                reason,
            )
        return ThresholdResult(
            threshold.key,
            threshold.direction,
            threshold.mode,
            threshold.limit,
            observed_base / threshold.limit.unit.factor,
            observed_base > threshold.limit.base,
            watches,
            reason,
        )

    if baseline is None or impact is None:
        return result(None, "no data to compare")
    direction = threshold.direction
    if threshold.mode == "absolute":
        moved = (impact - baseline) * metric.unit.factor
        return result({"increase": moved, "decrease": -moved, "change": abs(moved)}[direction])
    if threshold.mode == "relative":
        change = _relative(baseline, impact)
        if change is None:
            return result(None, "the baseline is 0: a relative change is undefined")
        return result({"increase": change, "decrease": -change, "change": abs(change)}[direction])
    up = _ratio(impact, baseline)
    down = _ratio(baseline, impact)
    if direction == "increase":
        if up is None:
            return result(None, "the baseline is 0: a factor is undefined")
        return result(up)
    if direction == "decrease":
        if down is None:
            return result(None, "the impact is 0: a decrease factor is undefined")
        return result(down)
    if up is None or down is None or up <= 0:
        return result(None, "a value is 0 or the sign changed: a factor is undefined")
    return result(max(up, down))


def _relative(baseline: float, impact: float) -> float | None:
    if baseline == 0:
        return 0.0 if impact == 0 else None
    return (impact - baseline) / abs(baseline)


def _ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0:
        return 1.0 if numerator == 0 else None
    return numerator / denominator


# --- one metric -----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricAnalysis:
    """Everything measured and judged for one metric (see the module docstring)."""

    metric: str
    unit: Unit
    better: str
    status: str
    central: str
    baseline_stats: SampleStats
    impact_stats: SampleStats
    baseline: float | None
    impact: float | None
    increase: float | None
    change: float | None
    factor: float | None
    test: TestResult | None
    significant: bool | None
    thresholds: tuple[ThresholdResult, ...]
    exceeded: bool | None
    degraded: bool | None
    significant_degradation: bool | None
    reasons: tuple[str, ...]
    dependence: Dependence | None = None
    decided_by: str | None = None

    @property
    def decrease(self) -> float | None:
        """Return baseline - impact (None when unknown)."""
        return None if self.increase is None else -self.increase

    @property
    def p_value(self) -> float | None:
        """Return the two-sided p-value (None when no test ran or it is undefined)."""
        return self.test.p_value if self.test is not None else None

    @property
    def direction(self) -> str | None:
        """Return ``increase``, ``decrease`` or ``none`` (None when unknown)."""
        if self.increase is None:
            return None
        return "increase" if self.increase > 0 else "decrease" if self.increase < 0 else "none"

    def to_json(self) -> dict[str, Any]:
        """Return the metric's analysis as canonical-JSON-safe evidence."""
        b, i = self.baseline_stats, self.impact_stats
        return json_safe(
            {
                "metric": self.metric,
                "unit": {
                    "symbol": self.unit.symbol,
                    "dimension": self.unit.dimension,
                    "factor": self.unit.factor,
                },
                "better": self.better,
                "status": self.status,
                "central": self.central,
                "baseline": self.baseline,
                "impact": self.impact,
                "increase": self.increase,
                "decrease": self.decrease,
                "change": self.change,
                "factor": self.factor,
                "direction": self.direction,
                "p_value": self.p_value,
                "significant": self.significant,
                "exceeded": self.exceeded,
                "degraded": self.degraded,
                "significant_degradation": self.significant_degradation,
                "counts": {
                    "baseline": b.count,
                    "impact": i.count,
                    "baseline_dropped": b.dropped,
                    "impact_dropped": i.dropped,
                },
                "percentiles": {
                    "baseline": {"p50": b.p50, "p95": b.p95, "p99": b.p99},
                    "impact": {"p50": i.p50, "p95": i.p95, "p99": i.p99},
                },
                "statistics": {"baseline": b.to_json(), "impact": i.to_json()},
                "test": self.test.to_json() if self.test is not None else None,
                "thresholds": [t.to_json() for t in self.thresholds],
                "independence": self.dependence.to_json() if self.dependence else None,
                "decided_by": self.decided_by,
                "reasons": list(self.reasons),
            }
        )


def analyze_metric(
    metric: Metric,
    baseline: Sequence[float] | None,
    impact: Sequence[float] | None,
    *,
    thresholds: Sequence[Threshold] = (),
    method: str | None = None,
    confidence: float = 0.95,
    min_samples: int = 5,
    tolerance_decides: bool = False,
) -> MetricAnalysis:
    """Compare one metric's ``baseline`` samples with its ``impact`` samples.

    ``None`` for a side means its collection failed (analyzed as no data).
    ``tolerance_decides``: when the test cannot run, a watching threshold that is not
    exceeded means "not degraded" (the default tolerance of a comparison that declares
    nothing), instead of unknown.

    Returns:
        The :class:`MetricAnalysis`; never raises for bad data, it reports it.

    Raises:
        ValueError: ``method`` is not ``mann_whitney``, ``welch_t`` or None, or
            ``confidence`` is not strictly between 0 and 1.
    """
    if method not in (None, "mann_whitney", "welch_t"):
        raise ValueError(f"unknown statistical method {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    # Samples near the float limits overflow to infinity in sums and squares; such
    # results are written as null (json_safe) instead of warning on stderr.
    with np.errstate(all="ignore"):
        return _analyze_metric(
            metric, baseline, impact, thresholds, method, confidence, min_samples,
            tolerance_decides,
        )  # fmt: skip


def _analyze_metric(
    metric: Metric,
    baseline: Sequence[float] | None,
    impact: Sequence[float] | None,
    thresholds: Sequence[Threshold],
    method: str | None,
    confidence: float,
    min_samples: int,
    tolerance_decides: bool = False,
) -> MetricAnalysis:
    reasons: list[str] = []
    b = SampleStats.of(baseline)
    i = SampleStats.of(impact)
    for side, stats_, raw in (("baseline", b, baseline), ("impact", i, impact)):
        if raw is None:
            reasons.append(f"no {side} samples: the collection failed or returned nothing")
        elif stats_.count == 0:
            reasons.append(f"no {side} samples" + _dropped_note(stats_))
        elif stats_.dropped:
            reasons.append(f"{side}: {stats_.dropped} non-finite sample(s) dropped")
    central = "mean" if method == "welch_t" else "median"
    metric_thresholds = tuple(t for t in thresholds if t.metric == metric.name)

    if b.count == 0 or i.count == 0:
        checked = tuple(_check_threshold(t, metric, None, None) for t in metric_thresholds)
        return MetricAnalysis(
            metric.name,
            metric.unit,
            metric.better,
            STATUS_NO_DATA,
            central,
            b,
            i,
            _central(b, central),
            _central(i, central),
            None,
            None,
            None,
            None,
            None,
            checked,
            None,
            None,
            None,
            tuple(reasons),
        )

    base_value = _central(b, central)
    impact_value = _central(i, central)
    assert base_value is not None and impact_value is not None
    increase = impact_value - base_value
    change = _relative(base_value, impact_value)
    factor = _ratio(impact_value, base_value)
    if base_value == 0 and impact_value == 0:
        reasons.append("baseline and impact are both 0: no change (change 0%, factor 1x)")
    elif base_value == 0:
        reasons.append("the baseline is 0: relative change and factor are undefined")

    status = STATUS_OK
    test: TestResult | None = None
    dependence: Dependence | None = None
    need = max(min_samples, 2)
    if method is not None:
        if b.count < need or i.count < need:
            status = STATUS_INSUFFICIENT
            reasons.append(
                f"{method} needs at least {need} samples on each side, got baseline "
                f"{b.count} and impact {i.count}: test not run"
            )
        else:
            dependence = _test_dependence(method, b, i)
            eff_b, eff_i = dependence.n_effective_baseline, dependence.n_effective_impact
            if dependence.corrected:
                reasons.append(
                    f"consecutive samples are dependent (lag-1 autocorrelation "
                    f"{dependence.lag1:.2f}): the test counts about {eff_b:.1f} baseline and "
                    f"{eff_i:.1f} impact independent samples (variance inflated "
                    f"{dependence.inflation:.2f}x)"
                )
            if eff_b < need or eff_i < need:
                status = STATUS_INSUFFICIENT
                reasons.append(
                    f"{method} needs at least {need} independent samples on each side, the "
                    f"series hold about {eff_b:.1f} (baseline) and {eff_i:.1f} (impact): "
                    "test not run; capture longer or less often"
                )
            else:
                test = (_mann_whitney if method == "mann_whitney" else _welch)(
                    b, i, metric.better, confidence, dependence
                )
                if test.reason:
                    reasons.append(test.reason)

    alpha = 1.0 - confidence
    significant = None if test is None or test.p_value is None else test.p_value < alpha

    checked = tuple(
        _check_threshold(t, metric, base_value, impact_value) for t in metric_thresholds
    )
    for result in checked:
        if result.reason:
            reasons.append(f"threshold {result.key}: {result.reason}")
    exceeded = _any3(t.exceeded for t in checked)

    moved_worse = (metric.better == "lower" and increase > 0) or (
        metric.better == "higher" and increase < 0
    )
    watching = tuple(t for t in checked if t.watches_worse)
    # Did a threshold on the worse direction see the central value move that way by more
    # than its limit? (None when a watching threshold could not be evaluated.)
    over_limit = _any3(
        None if t.exceeded is None else bool(t.exceeded and (metric.better == "none" or moved_worse))
        for t in watching
    )
    usable_test = test is not None and test.p_value is not None

    decided_by: str
    if watching:
        if not usable_test:
            # No test to confirm it: a limit exceeded the worse way degrades the metric
            # on its own. A limit not exceeded is "not degraded" only when no test was
            # asked for; with a test that could not run, it stays unknown (as before).
            decided_by = DECIDED_BY_THRESHOLD
            degraded: bool | None = over_limit
            if method is not None and over_limit is False and not tolerance_decides:
                degraded = None
            if method is not None and over_limit:
                reasons.append("the test could not run: the exceeded threshold alone decides")
        else:
            assert test is not None
            decided_by = DECIDED_BY_THRESHOLD_AND_TEST
            # The threshold says how much movement matters; the test says it is not noise:
            # one-sided in the worse direction (two-sided when ``better: none``).
            p_confirm = test.p_value if metric.better == "none" else test.p_value_worse
            confirmed = None if p_confirm is None else p_confirm < alpha
            degraded = _all3((over_limit, confirmed))
            if over_limit and confirmed is False:
                reasons.append(
                    f"a threshold is exceeded but the test does not confirm a worse shift "
                    f"(p = {p_confirm:.3g} >= {alpha:.3g}): not degraded"
                )
    elif method is None:
        decided_by = DECIDED_BY_NOTHING
        degraded = False
        if not metric_thresholds:
            reasons.append("no threshold and no statistical test apply: nothing can degrade it")
        else:
            reasons.append(
                "no threshold watches the worse direction and no test runs: nothing can "
                "degrade it"
            )
    elif metric.better == "none":
        decided_by = DECIDED_BY_NOTHING
        degraded = False if test is not None else None
        reasons.append("better: none and no threshold: nothing can degrade it")
    elif not usable_test:
        decided_by = DECIDED_BY_TEST
        degraded = None
    else:
        assert test is not None and test.p_value is not None
        decided_by = DECIDED_BY_TEST
        if test.trivial is None:
            degraded = None
        else:
            effect = test.effect_size or 0.0
            effect_worse = effect > 0 if metric.better == "lower" else effect < 0
            # Significant two-sided (as ``significant`` says) with a non-negligible effect
            # pointing the worse way: a false alarm rate of at most alpha/2 per metric.
            degraded = bool(test.p_value < alpha and not test.trivial and effect_worse)

    # Degradations the test took part in (None when no test could run).
    significant_degradation = None if method is None or not usable_test else degraded
    if degraded is None:
        reasons.append("degradation unknown: see the reasons above")

    return MetricAnalysis(
        metric.name,
        metric.unit,
        metric.better,
        status,
        central,
        b,
        i,
        base_value,
        impact_value,
        increase,
        change,
        factor,
        test,
        significant,
        checked,
        exceeded,
        degraded,
        significant_degradation,
        tuple(reasons),
        dependence,
        decided_by,
    )


def _central(stats_: SampleStats, central: str) -> float | None:
    return stats_.mean if central == "mean" else stats_.median


def _dropped_note(stats_: SampleStats) -> str:
    return f" ({stats_.dropped} non-finite sample(s) dropped)" if stats_.dropped else ""


def _all3(flags: Any) -> bool | None:
    """Three-valued AND: False if any is False, None if none is but some are unknown."""
    seen_unknown = False
    for flag in flags:
        if flag is False:
            return False
        if flag is None:
            seen_unknown = True
    return None if seen_unknown else True


def _any3(flags: Any) -> bool | None:
    """Three-valued OR: True if any is True, None if none is but some are unknown."""
    seen_unknown = False
    for flag in flags:
        if flag is True:
            return True
        if flag is None:
            seen_unknown = True
    return None if seen_unknown else False


# --- the whole analysis ---------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisResult:
    """An analysis step's result: every metric and the summary conditions read."""

    baseline_step: str
    impact_step: str
    method: str | None
    confidence: float
    min_samples: int
    metrics: tuple[MetricAnalysis, ...]

    def metric(self, name: str) -> MetricAnalysis:
        """Return the analysis of metric ``name``.

        Raises:
            KeyError: the metric was not analyzed.
        """
        for item in self.metrics:
            if item.metric == name:
                return item
        raise KeyError(name)

    @property
    def any_degradation(self) -> bool | None:
        """Return True if a metric degraded, None if none did but some are unknown."""
        return _any3(m.degraded for m in self.metrics)

    @property
    def significant_degradation(self) -> bool | None:
        """Return the same as :attr:`any_degradation`, for degradations the test found."""
        if self.method is None:
            return None
        return _any3(m.significant_degradation for m in self.metrics)

    @property
    def all_metrics_within_normal(self) -> bool:
        """Return True when every metric is known not degraded and nothing is exceeded."""
        return all(m.degraded is False and m.exceeded is False for m in self.metrics)

    @property
    def exceeded(self) -> list[str]:
        """Return the metrics with an exceeded threshold."""
        return [m.metric for m in self.metrics if m.exceeded]

    @property
    def inconclusive(self) -> list[str]:
        """Return the metrics whose degradation is unknown."""
        return [m.metric for m in self.metrics if m.degraded is None]

    def summary(self) -> dict[str, Any]:
        """Return the summary fields (``any_degradation`` ... ``inconclusive``)."""
        return {
            "any_degradation": self.any_degradation,
            "significant_degradation": self.significant_degradation,
            "all_metrics_within_normal": self.all_metrics_within_normal,
            "exceeded": self.exceeded,
            "inconclusive": self.inconclusive,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the analysis as evidence (schema ``evidence-schema/analysis.v1``)."""
        return json_safe(
            {
                "schema": SCHEMA,
                "baseline_step": self.baseline_step,
                "impact_step": self.impact_step,
                "method": self.method,
                "confidence": self.confidence,
                "alpha": 1.0 - self.confidence,
                "min_samples": self.min_samples,
                "metrics": {m.metric: m.to_json() for m in self.metrics},
                "summary": self.summary(),
            }
        )

    def values(self) -> dict[str, Any]:
        """Return the namespace conditions evaluate over (see :func:`analysis_values`)."""
        return analysis_values(self.to_json())


def analysis_values(document: Mapping[str, Any]) -> dict[str, Any]:
    """Return the expression namespace for an analysis document (``to_json()`` output).

    ``{metric: {baseline, impact, increase, decrease: Quantity in the metric's unit;
    change: Quantity in %; factor: Quantity in x; p_value: float; significant, exceeded,
    degraded: bool}}`` (None where unknown), plus the summary names at the top level.
    Works on a document read back from evidence, so a resumed run decides exactly as
    the original would have.
    """
    out: dict[str, Any] = {}
    for name, item in document.get("metrics", {}).items():
        spec = item["unit"]
        unit = Unit(spec["symbol"], spec["dimension"], spec["factor"])
        fields: dict[str, Any] = {}
        for key in ("baseline", "impact", "increase", "decrease"):
            fields[key] = _quantity(item.get(key), unit)
        change = item.get("change")
        fields["change"] = None if change is None else Quantity(change * 100.0, _CHANGE_UNIT)
        fields["factor"] = _quantity(item.get("factor"), _FACTOR_UNIT)
        fields["p_value"] = item.get("p_value")
        for key in ("significant", "exceeded", "degraded"):
            fields[key] = item.get(key)
        out[name] = fields
    out.update(document.get("summary", {}))
    return out


def _quantity(value: float | None, unit: Unit) -> Quantity | None:
    return None if value is None else Quantity(float(value), unit)


def analyze(
    params: Analyze,
    workflow: Workflow,
    baseline: Mapping[str, Sequence[float] | None],
    impact: Mapping[str, Sequence[float] | None],
) -> AnalysisResult:
    """Analyze every metric of an analysis step, baseline samples against impact samples.

    ``baseline`` and ``impact`` map metric names to samples in the metric's unit (a
    sequence of numbers, or a collector's ``MetricData``); a metric missing from either
    (its collection failed) is analyzed as ``no_data``.

    Returns:
        The :class:`AnalysisResult`.

    Raises:
        KeyError: ``params`` names a metric the workflow does not define.
        ValueError: an unknown method or a confidence outside (0, 1).
    """
    results = tuple(
        analyze_metric(
            workflow.metric(name),
            baseline.get(name),
            impact.get(name),
            thresholds=params.thresholds,
            method=params.method,
            confidence=params.confidence,
            min_samples=params.min_samples,
            tolerance_decides=params.tolerance_decides,
        )
        for name in params.metrics
    )
    return AnalysisResult(
        params.baseline,
        params.impact,
        params.method,
        params.confidence,
        params.min_samples,
        results,
    )


__all__ = [
    "AnalysisResult",
    "MetricAnalysis",
    "SampleStats",
    "TestResult",
    "ThresholdResult",
    "analysis_values",
    "analyze",
    "analyze_metric",
]
