"""Benchmark: analyze 50 metrics x 1,000 samples per side (Mann-Whitney and Welch).

    python benchmarks/bench_analysis.py [--metrics 50] [--samples 1000] [--repeat 5]

Prints the import cost of scipy (paid once per process), then the best and median
wall time of a whole analysis (per-metric statistics, test, effect sizes, thresholds,
to_json and values()) for each method, and the time per metric.
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
    args = parser.parse_args()

    started = time.perf_counter()
    import scipy.stats  # noqa: F401  (measured: the first analysis in a process pays it)

    scipy_import = time.perf_counter() - started

    from afdp.analysis import analyze
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


if __name__ == "__main__":
    main()
