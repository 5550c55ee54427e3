"""The reference distributions and rank statistics the tests read, without ``scipy.stats``.

Importing ``scipy.stats`` costs about a second of CPU (it builds every distribution
scipy has), which every ``afdp run`` with an analysis paid for a handful of numbers.
These functions give the *same numbers*: they call the same ``scipy.special`` routines
that ``scipy.stats`` calls underneath (Student's t: ``stdtr``/``stdtrit``; the normal:
``ndtr``/``ndtri``) and repeat ``scipy.stats.mannwhitneyu``'s normal approximation
operation for operation. Where scipy would compute the exact distribution of U (small
samples without ties), :func:`mannwhitneyu` hands the question to ``scipy.stats``
itself. ``tests/test_analysis_distributions.py`` checks every function against
``scipy.stats``, bit for bit, over generated samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

#: ``scipy.stats.mannwhitneyu(method="auto")`` computes the exact distribution of U when
#: a side has at most this many samples and no value is tied.
EXACT_MAX_SIZE = 8


# scipy.stats' continuous distributions wrap the special functions in argument checks;
# these repeat them (support -inf..inf; ``df`` must be > 0; NaN in, NaN out).


def t_sf(x: float, df: float) -> float:
    """Return Student's t survival function at ``x`` (``scipy.stats.t.sf(x, df)``)."""
    if not df > 0 or math.isnan(x):
        return math.nan
    if x == -math.inf:
        return 1.0
    if x == math.inf:
        return 0.0
    from scipy.special import stdtr

    return float(stdtr(df, -x))


def t_cdf(x: float, df: float) -> float:
    """Return Student's t distribution function at ``x`` (``scipy.stats.t.cdf(x, df)``)."""
    if not df > 0 or math.isnan(x):
        return math.nan
    if x == math.inf:
        return 1.0
    if x == -math.inf:
        return 0.0
    from scipy.special import stdtr

    return float(stdtr(df, x))


def t_ppf(q: float, df: float) -> float:
    """Return Student's t quantile ``q`` (``scipy.stats.t.ppf(q, df)``)."""
    if not df > 0:
        return math.nan
    from scipy.special import stdtrit

    return _quantile(q, lambda p: float(stdtrit(df, p)))


def norm_ppf(q: float) -> float:
    """Return the standard normal quantile ``q`` (``scipy.stats.norm.ppf(q)``)."""
    from scipy.special import ndtri

    return _quantile(q, lambda p: float(ndtri(p)))


def _quantile(q: float, inner: Callable[[float], float]) -> float:
    if q == 0.0:
        return -math.inf
    if q == 1.0:
        return math.inf
    if not 0.0 < q < 1.0:
        return math.nan
    return inner(q) * 1.0 + 0.0  # scipy's "* scale + loc": -0.0 becomes 0.0


def rank_average(values: np.ndarray) -> np.ndarray:
    """Return the average ranks of ``values`` (1-based, ties share their mean rank), as
    ``scipy.stats.rankdata(values)`` does. ``values`` is 1-D and finite."""
    return _ranks(values)[0]


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (average ranks, each group of equal values' first sorted position, its
    size), groups in ascending order of value (scipy's ``_rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[:-1] != ordered[1:]])
    first = np.flatnonzero(starts)
    counts = np.diff(first, append=values.size)
    # The mean of ordinal ranks first+1 .. first+count, as scipy computes it.
    group_ranks = (first + 1).astype(float) + (counts.astype(float) - 1) / 2
    ranks = np.empty(values.size, dtype=float)
    ranks[order] = np.repeat(group_ranks, counts)
    return ranks, first, counts


class MannWhitney(NamedTuple):
    """U of the first sample and the p-value, as ``scipy.stats.mannwhitneyu`` returns."""

    statistic: np.float64
    pvalue: np.float64


def mannwhitneyu(x: np.ndarray, y: np.ndarray, alternative: str) -> MannWhitney:
    """Return ``scipy.stats.mannwhitneyu(x, y, alternative=alternative, method="auto")``.

    ``x`` and ``y`` are 1-D, non-empty and finite float arrays. The normal approximation
    (with tie and continuity corrections) is computed here; the exact distribution,
    which scipy uses when a side has at most 8 samples and nothing is tied, is scipy's.
    """
    n1, n2 = x.size, y.size
    ranks, first, counts = _ranks(np.concatenate([x, y]))
    if (n1 <= EXACT_MAX_SIZE or n2 <= EXACT_MAX_SIZE) and not bool(np.any(counts > 1)):
        from scipy import stats

        exact = stats.mannwhitneyu(x, y, alternative=alternative, method="auto")
        return MannWhitney(np.float64(exact.statistic), np.float64(exact.pvalue))
    from scipy.special import ndtr

    r1 = np.sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2
    u2 = n1 * n2 - u1
    if alternative == "greater":
        u, factor = u1, 1
    elif alternative == "less":
        u, factor = u2, 1
    elif alternative == "two-sided":
        u, factor = np.maximum(u1, u2), 2
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    # scipy's _get_mwu_z: the tie-corrected standard deviation, then continuity.
    mu = n1 * n2 / 2
    n = n1 + n2
    # The group sizes laid out as scipy lays them (at each group's first sorted position,
    # zeros elsewhere), so the sum adds the same terms in the same order.
    ties = np.zeros(n, dtype=np.float64)
    ties[first] = counts
    tie_term = np.sum(ties**3 - ties)
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    numerator = u - mu
    numerator -= 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / s
    p = ndtr(-z)
    p *= factor
    return MannWhitney(np.float64(u1), np.float64(np.clip(p, 0.0, 1.0)))
