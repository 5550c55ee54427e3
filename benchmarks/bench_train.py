"""Benchmark: train an impact model and predict with it, at 1,000 and 10,000 history rows.

    python benchmarks/bench_train.py [--rows 1000 10000] [--predictions 50]

Synthetic history rows (the loader's columns: change size, files, kinds, hour, weekday,
environment, two metrics and a revenue metric, so three targets) with a known pattern.
For each size it prints:

- ``fit``: fitting the three conformal regressors (what a refit of a recorded model
  costs: :func:`afdp.learn.model.fit`), best of ``--repeat``;
- ``coverage``: the outer 5-fold cross-validation of the intervals (``evaluate``),
  which ``train`` also runs once per model, and the empirical coverage it measured;
- ``train``: what :func:`afdp.learn.model.train` costs: fit + coverage + the fingerprint
  (the model's predictions on every training row), each timed once here;
- ``predict``: the latency of one prediction (one planned deployment, all targets),
  median of ``--predictions``;
- ``similar``: the latency of one :func:`afdp.learn.similar.find_similar` over all rows.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta


def synthetic_rows(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        at = start + timedelta(minutes=rng.randrange(60 * 24 * 365))
        size = rng.choice([5, 20, 80, 300, 1200, 5000])
        kinds = sorted(rng.sample(["migration", "frontend", "config", "code"], rng.randrange(1, 3)))
        increase = 0.002 * math.log1p(size) + (0.03 if 12 <= at.hour < 18 else 0) + (0.02 if "migration" in kinds else 0)
        increase += rng.gauss(0, 0.005)
        revenue = 5.0 + rng.gauss(0, 0.1)
        rows.append({
            "service": "api", "deployment": f"d-{i:06d}", "environment": rng.choice(["production", "staging"]),
            "deployed_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "hour_utc": at.hour, "weekday_utc": at.weekday(),
            "change_size": size, "changed_files_count": max(1, size // 40), "changed_kinds": kinds,
            "money_per_hour": revenue * 3600,
            "impact.latency.baseline": 0.045, "impact.latency.increase": increase,
            "impact.latency.degraded": increase > 0.03,
            "impact.errors.baseline": 0.01, "impact.errors.increase": rng.gauss(0, 0.002) + increase / 10,
            "impact.revenue.baseline": revenue, "impact.revenue.increase": -2 * increase,
            "record_digests": [f"{i:064x}"],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--predictions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from afdp.learn.features import Planned
    from afdp.learn.model import TrainingSet, evaluate, fit
    from afdp.learn.similar import find_similar

    planned = Planned.of(change_size=300, changed_files=8, kinds=["migration"],
                         at=datetime(2026, 12, 7, 14, tzinfo=UTC), environment="production")
    print(f"{'rows':>7} {'fit s':>8} {'coverage s':>11} {'train s':>8} {'predict ms':>11} {'similar ms':>11}  coverage (nominal 90%)")
    for n in args.rows:
        rows = synthetic_rows(n)
        training = TrainingSet.of(rows, service="api", dataset_digest="0" * 64)
        fits = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            model = fit(training)
            fits.append(time.perf_counter() - started)
        started = time.perf_counter()
        coverage = evaluate(training)
        coverage_s = time.perf_counter() - started
        started = time.perf_counter()
        model.fingerprint()
        train_s = min(fits) + coverage_s + (time.perf_counter() - started)
        latencies = []
        for _ in range(args.predictions):
            started = time.perf_counter()
            model.predict([planned])
            latencies.append(time.perf_counter() - started)
        similar = []
        for _ in range(5):
            started = time.perf_counter()
            find_similar(rows, planned, service="api")
            similar.append(time.perf_counter() - started)
        cover = ", ".join(f"{t.split('.')[1] if t.startswith('impact.') else t} {c['empirical']:.1%}" for t, c in coverage.items())
        print(f"{n:>7} {min(fits):>8.2f} {coverage_s:>11.2f} {train_s:>8.2f} {statistics.median(latencies) * 1000:>11.1f} "
              f"{statistics.median(similar) * 1000:>11.1f}  {cover}")


if __name__ == "__main__":
    main()
