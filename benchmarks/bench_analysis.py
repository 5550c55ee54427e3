"""Benchmark: analyze 50 metrics x 1,000 samples per side (Mann-Whitney and Welch).

    python benchmarks/bench_analysis.py [--metrics 50] [--samples 1000] [--repeat 5] [--runs 400]

Prints the import cost of scipy (paid once per process), then the best and median
wall time of a whole analysis (per-metric statistics, test, effect sizes, thresholds,
to_json and values()) for each method, and the time per metric.

Then the false-alarm and detection rates of ``degraded`` over ``--runs`` seeded runs
per scenario (``--rate-samples``, default 300, a side; 87 ms +- 10 ms, Mann-Whitney at 0.95): independent
samples, AR(1) noise (phi 0.5 and 0.9) and a 5-sample moving average (``rate(...[5s])``
read every second); no change, a +5 ms and a +40 ms shift. Columns: this analysis with no
threshold (test and effect size decide), with a 15 ms ``increase`` threshold (the
threshold decides, the test confirms), and the naive rule that treats the samples as
independent (scipy's Mann-Whitney, two-sided p < 0.05 with a non-trivial Cliff's delta
pointing up), which is what the analysis did before dependence was allowed for.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=400, help="seeded runs per rate scenario")
    parser.add_argument("--rate-samples", type=int, default=300, help="samples a side in the rate runs")
    args = parser.parse_args()

    started = time.perf_counter()
    import scipy.stats  # noqa: F401  (measured: the first analysis in a process pays it)

    scipy_import = time.perf_counter() - started

    from afdp.pipeline.analysis import analyze
    from afdp.workflow.model import Analyze, Metric, Threshold, Workflow
    from afdp.workflow.units import parse_quantity, parse_unit

    names = tuple(f"metric_{i:02d}" for i in range(args.metrics))
    metrics = tuple(Metric(n, "prometheus", parse_unit("s"), "lower") for n in names)
    workflow = Workflow(
        name="bench",
        version="1",
        description="",
        triggers=(),
        phases=(),
        collectors=(),
        metrics=metrics,
        analyzers=(),
        decisions=(),
        success_criteria=(),
        outputs=(),
        variables=(),
        stages=(),
        digest="0" * 64,
        source="bench",
    )
    thresholds = tuple(
        Threshold(n, "increase", parse_quantity("10ms"), "absolute", f"{n}_increase") for n in names
    )
    rng = np.random.default_rng(42)
    baseline = {n: rng.lognormal(np.log(0.2), 0.25, args.samples) for n in names}
    impact = {
        n: rng.lognormal(np.log(0.2 * (1.2 if i % 5 == 0 else 1.0)), 0.25, args.samples)
        for i, n in enumerate(names)
    }
    print(
        f"analysis benchmark: {args.metrics} metrics x {args.samples} samples per side, "
        f"best/median of {args.repeat}"
    )
    print(f"  scipy.stats import (once per process): {scipy_import * 1000:.0f} ms")
    for method in ("mann_whitney", "welch_t"):
        params = Analyze("baseline", "impact", names, thresholds, method, 0.95, 5)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = analyze(params, workflow, baseline, impact)
            result.to_json()
            result.values()
            times.append(time.perf_counter() - t0)
        best, median = min(times), statistics.median(times)
        degraded = sum(1 for m in result.metrics if m.degraded)
        print(
            f"  {method:12s}: best {best * 1000:7.1f} ms, median {median * 1000:7.1f} ms, "
            f"{best / args.metrics * 1000:5.2f} ms/metric; degraded {degraded}/{args.metrics} "
            f"(regressed by construction: {len(range(0, args.metrics, 5))})"
        )
    rates(args.runs, args.rate_samples)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    noise = rng.normal(0.0, sd * np.sqrt(1.0 - phi * phi), n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sd)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + noise[t]
    return out


def _moving_average(rng: np.random.Generator, n: int, width: int, sd: float) -> np.ndarray:
    # scaled so the marginal standard deviation is sd, like the other scenarios
    raw = rng.normal(0.0, sd * np.sqrt(width), n + width - 1)
    return np.convolve(raw, np.ones(width) / width, mode="valid")


def rates(runs: int, n: int = 300) -> None:
    """Print false-alarm and detection rates of ``degraded`` per scenario and rule."""
    from scipy.stats import mannwhitneyu

    from afdp.pipeline.analysis import TRIVIAL_CLIFFS_DELTA, analyze_metric
    from afdp.workflow.model import Metric, Threshold
    from afdp.workflow.units import parse_quantity, parse_unit

    metric = Metric("latency", "prometheus", parse_unit("ms"), "lower")
    limit = Threshold("latency", "increase", parse_quantity("15ms"), "absolute", "latency_increase")
    scenarios = {
        "independent": lambda r: r.normal(0.0, 10.0, n),
        "AR(1) phi 0.5": lambda r: _ar1(r, n, 0.5, 10.0),
        "AR(1) phi 0.9": lambda r: _ar1(r, n, 0.9, 10.0),
        "MA(5) (rate[5s] @1s)": lambda r: _moving_average(r, n, 5, 10.0),
    }

    def naive(base: np.ndarray, impact: np.ndarray) -> bool:
        test = mannwhitneyu(impact, base, alternative="two-sided")
        delta = 2.0 * float(test.statistic) / (base.size * impact.size) - 1.0
        return bool(test.pvalue < 0.05 and delta >= TRIVIAL_CLIFFS_DELTA)

    print(f"degraded rates over {runs} seeded runs, {n} samples a side, Mann-Whitney at 0.95")
    print(f"  {'scenario':22s} {'shift':>6s}  {'no threshold':>12s}  {'15ms limit':>10s}  {'naive':>6s}  n_eff")
    for name, noise in scenarios.items():
        for shift in (0.0, 5.0, 40.0):
            rng = np.random.default_rng(1000 + int(shift))
            counts = [0, 0, 0]
            n_eff: list[float] = []
            for _ in range(runs):
                base, impact = 87.0 + noise(rng), 87.0 + shift + noise(rng)
                alone = analyze_metric(metric, base, impact, method="mann_whitney")
                limited = analyze_metric(metric, base, impact, thresholds=[limit], method="mann_whitney")
                counts[0] += alone.degraded is True
                counts[1] += limited.degraded is True
                counts[2] += naive(base, impact)
                if alone.dependence is not None:
                    n_eff.append(alone.dependence.n_effective_baseline)
            shares = [f"{100.0 * c / runs:5.1f}%" for c in counts]
            print(
                f"  {name:22s} {shift:+5.0f}ms  {shares[0]:>12s}  {shares[1]:>10s}  {shares[2]:>6s}  "
                f"{statistics.median(n_eff):5.1f}"
            )


if __name__ == "__main__":
    main()
