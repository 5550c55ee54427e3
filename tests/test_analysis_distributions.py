"""afdp.pipeline.analysis.distributions gives scipy.stats' numbers, bit for bit, without
importing scipy.stats on the analysis path of ``afdp run``.

Each function is compared with the scipy.stats function it stands for over generated
samples (sizes on both sides of the exact/asymptotic switch, ties, constant sides,
dependent series), and the analysis results (every test, every number) with and without
it are compared through ``afdp.pipeline.analysis.analyze``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from afdp.pipeline.analysis import distributions
from afdp.pipeline.analysis.distributions import (
    mannwhitneyu,
    norm_ppf,
    rank_average,
    t_cdf,
    t_ppf,
    t_sf,
)

ROOT = Path(__file__).resolve().parent.parent


def same(a: float, b: float) -> bool:
    """Bitwise equal (NaN equals NaN; +0.0 and -0.0 differ)."""
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


SIZES = [(2, 2), (3, 7), (8, 8), (8, 30), (9, 9), (9, 40), (20, 25), (60, 60), (300, 250), (2000, 1500)]


def samples(rng: np.random.Generator, sizes: list[tuple[int, int]] = SIZES) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of samples: small and large, continuous and tied, shifted and not, AR(1)."""
    out = []
    for n1, n2 in sizes:
        for _ in range(6):
            x = rng.normal(0.0, 1.0, n1)
            y = rng.normal(rng.choice([0.0, 0.3, 1.5]), rng.choice([0.5, 1.0, 3.0]), n2)
            out.append((x, y))
            out.append((np.round(x * 2) / 2, np.round(y * 2) / 2))  # many ties
            out.append((np.floor(np.abs(x)), np.floor(np.abs(y))))  # few distinct values
        ar = np.empty(n1 + n2)
        ar[0] = 0.0
        for i in range(1, ar.size):
            ar[i] = 0.8 * ar[i - 1] + rng.normal()
        out.append((ar[:n1] * 1e-3 + 0.12, ar[n1:] * 1e-3 + 0.125))  # latency-like, dependent
    out.append((np.full(10, 1.0), np.full(12, 2.0)))  # two constant sides that differ
    out.append((np.full(10, 1.0), np.concatenate([np.full(11, 1.0), [2.0]])))
    out.append((np.array([1e300, -1e300, 0.0]), np.array([5e-324, 1.0, 2.0])))
    return out


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_mannwhitneyu_equals_scipy_bit_for_bit(alternative: str) -> None:
    rng = np.random.default_rng(14)
    checked = exact = 0
    for x, y in samples(rng):
        ours = mannwhitneyu(x, y, alternative)
        theirs = stats.mannwhitneyu(x, y, alternative=alternative, method="auto")
        assert same(ours.statistic, theirs.statistic), (x, y)
        assert same(ours.pvalue, theirs.pvalue), (x, y, ours.pvalue, theirs.pvalue)
        checked += 1
        exact += (x.size <= 8 or y.size <= 8) and np.unique(np.concatenate([x, y])).size == x.size + y.size
    assert checked > 150 and exact > 10  # both of scipy's methods were compared


def test_mannwhitneyu_refuses_an_unknown_alternative() -> None:
    with pytest.raises(ValueError, match="alternative"):
        mannwhitneyu(np.arange(20.0), np.arange(20.0) + 0.5, "sideways")


def test_asymptotic_mannwhitneyu_does_not_import_scipy_stats() -> None:
    # The exact distribution is scipy's; the normal approximation (every capture of more
    # than 8 samples, or any tie) must not pull scipy.stats in. A fresh interpreter.
    code = (
        "import sys, numpy as np\n"
        "from afdp.pipeline.analysis.distributions import mannwhitneyu, rank_average, t_sf, t_ppf, norm_ppf\n"
        "x = np.linspace(0, 1, 30); y = np.linspace(0.2, 1.1, 25)\n"
        "mannwhitneyu(x, y, 'two-sided'); mannwhitneyu(x[:5], np.round(y, 1), 'less')\n"
        "rank_average(x); t_sf(1.0, 12.0); t_ppf(0.975, 3.5); norm_ppf(0.975)\n"
        "print('scipy.stats' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert done.stdout.strip() == "False"


def test_exact_mannwhitneyu_is_scipys() -> None:
    # Small samples without ties: scipy's exact distribution, not the normal approximation.
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0, 7.0])
    ours = mannwhitneyu(x, y, "less")
    assert same(ours.pvalue, stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue)
    assert not same(ours.pvalue, stats.mannwhitneyu(x, y, alternative="less", method="asymptotic").pvalue)


def test_rank_average_equals_rankdata() -> None:
    rng = np.random.default_rng(7)
    for x, y in samples(rng):
        values = np.concatenate([x, y])
        assert np.array_equal(rank_average(values), stats.rankdata(values))
        assert rank_average(values).dtype == stats.rankdata(values).dtype


@pytest.mark.parametrize("df", [1.0, 1.5, 2.0, 3.7, 12.0, 57.25, 1e3, 1e6, math.inf, math.nan, 0.0, -1.0])
def test_student_t_equals_scipy(df: float) -> None:
    xs = [-1e6, -40.0, -3.2, -1.0, -0.5, -0.0, 0.0, 1e-9, 0.5, 1.96, 2.5, 8.0, 40.0, 1e6, math.inf, -math.inf, math.nan]
    for x in xs:
        assert same(t_sf(x, df), stats.t.sf(x, df)), (x, df)
        assert same(t_cdf(x, df), stats.t.cdf(x, df)), (x, df)
    for q in [0.0, 1e-12, 0.025, 0.5, 0.8, 0.95, 0.975, 0.995, 0.999999, 1.0]:
        assert same(t_ppf(q, df), stats.t.ppf(q, df)), (q, df)


def test_normal_quantile_equals_scipy() -> None:
    for q in [0.0, 1e-300, 1e-12, 0.025, 0.5, 0.8, 0.9, 0.95, 0.975, 0.995, 0.999999, 1.0]:
        assert same(norm_ppf(q), stats.norm.ppf(q)), q


def test_a_different_number_is_caught() -> None:
    # The comparison above can fail: a neighbouring float is not "the same".
    value = stats.t.sf(1.0, 5.0)
    assert not same(np.nextafter(value, 1.0), value)
    assert not same(0.0, -0.0)


class ScipyStats:
    """The functions of :mod:`distributions` computed with scipy.stats, as before."""

    @staticmethod
    def t_sf(x: float, df: float) -> float:
        return float(stats.t.sf(x, df))

    @staticmethod
    def t_cdf(x: float, df: float) -> float:
        return float(stats.t.cdf(x, df))

    @staticmethod
    def t_ppf(q: float, df: float) -> float:
        return float(stats.t.ppf(q, df))

    @staticmethod
    def norm_ppf(q: float) -> float:
        return float(stats.norm.ppf(q))

    @staticmethod
    def rank_average(values: np.ndarray) -> np.ndarray:
        return stats.rankdata(values)

    @staticmethod
    def mannwhitneyu(x: np.ndarray, y: np.ndarray, alternative: str) -> object:
        return stats.mannwhitneyu(x, y, alternative=alternative, method="auto")


@pytest.mark.parametrize("method", ["mann_whitney", "welch_t"])
def test_analysis_results_are_unchanged(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every analysis number is the same computed through scipy.stats (as before) and
    through distributions: the whole analysis document, compared as JSON text."""
    from afdp.pipeline.analysis.verdicts import analyze_metric
    from afdp.workflow.model import Metric, Threshold
    from afdp.workflow.units import parse_quantity, parse_unit

    rng = np.random.default_rng(3)
    cases = [
        (Metric(name="latency", collector="prometheus", unit=parse_unit("s"), better="lower"), ()),
        (Metric(name="throughput", collector="prometheus", unit=parse_unit("1"), better="higher"), ()),
        (Metric(name="other", collector="prometheus", unit=parse_unit("1"), better="none"), ()),
        (
            Metric(name="latency", collector="prometheus", unit=parse_unit("s"), better="lower"),
            (Threshold("latency", "increase", parse_quantity("10%"), "relative", "latency_increase"),),
        ),
    ]

    def run_all() -> str:
        results = []
        for x, y in samples(rng_copy(), SIZES[:-2]):  # the analysis of large samples is slow
            for metric, thresholds in cases:
                for confidence in (0.9, 0.95, 0.99):
                    result = analyze_metric(
                        metric, list(y), list(x), thresholds=thresholds, method=method,
                        confidence=confidence, min_samples=2,
                    )
                    results.append(result.to_json())
        return json.dumps(results, sort_keys=True, default=repr)

    state = rng.bit_generator.state

    def rng_copy() -> np.random.Generator:
        copy = np.random.default_rng()
        copy.bit_generator.state = state
        return copy

    ours = run_all()
    for name in ("t_sf", "t_cdf", "t_ppf", "norm_ppf", "rank_average", "mannwhitneyu"):
        monkeypatch.setattr(distributions, name, getattr(ScipyStats, name))
    before = run_all()
    assert ours == before
    # What was compared: tests with p-values and intervals, on independent samples and
    # on dependent ones (the corrected variants), and small samples (scipy's exact U).
    assert '"p_value_worse": 0.' in ours and '"interval": [' in ours
    assert '"method": "ar1_effective_sample_size"' in ours and '"method": "independent"' in ours
