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
  decision, is false when the metric is known not degraded (a metric that did not
  degrade did not degrade significantly), and is null otherwise.
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

The package's modules, each importing only those before it: :mod:`.samples` (one side's
samples), :mod:`.dependence` (serial dependence), :mod:`.statistics` (the tests and
effect sizes), :mod:`.thresholds`, :mod:`.verdicts` (one metric's verdict) and
:mod:`.result` (the whole analysis). Every name is importable from here as before.
"""

from __future__ import annotations

# Every name the single module had is importable from the package (the ``noqa`` names
# are re-exported for code and tests that import them; ``__all__`` is unchanged).
from afdp.pipeline.analysis.dependence import (  # noqa: F401
    DEPENDENCE_METHOD,
    INDEPENDENT_METHOD,
    MAX_LAG1,
    Dependence,
)
from afdp.pipeline.analysis.result import SCHEMA, AnalysisResult, analysis_values, analyze  # noqa: F401
from afdp.pipeline.analysis.samples import SampleStats
from afdp.pipeline.analysis.statistics import (  # noqa: F401
    MAX_PAIRS,
    TRIVIAL_CLIFFS_DELTA,
    TRIVIAL_COHENS_D,
    TestResult,
    _hodges_lehmann,
)
from afdp.pipeline.analysis.thresholds import ThresholdResult
from afdp.pipeline.analysis.verdicts import (  # noqa: F401
    DECIDED_BY_NOTHING,
    DECIDED_BY_TEST,
    DECIDED_BY_THRESHOLD,
    DECIDED_BY_THRESHOLD_AND_TEST,
    STATUS_INSUFFICIENT,
    STATUS_NO_DATA,
    STATUS_OK,
    MetricAnalysis,
    analyze_metric,
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
