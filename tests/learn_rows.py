"""History rows built in the tests, with a known ground truth (for unit tests of the
learning code: the rows have the columns :func:`afdp.learn.history.load_history` gives;
end-to-end, rows come from real runs in ``test_learning_e2e.py``).

The truth: latency increase = 2 ms x ln(1 + change size) + 30 ms when deployed in the
afternoon (12-18 UTC, the peak, when load doubles) + 20 ms for a migration, plus
Gaussian noise (sd 5 ms); a metric is degraded above 30 ms. Revenue (USD/s) drops by
2 x the latency increase (in s), so money lost per hour = 7200 x increase.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

KINDS = ("migration", "frontend", "config")


def truth(size: float, hour: int, kinds: list[str]) -> float:
    return 0.002 * math.log1p(size) + (0.030 if 12 <= hour < 18 else 0.0) + (0.020 if "migration" in kinds else 0.0)


def make_row(i: int, rng: random.Random, *, at: datetime | None = None, size: int | None = None,
             kinds: list[str] | None = None) -> dict:
    at = at or datetime(2026, 9, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(24 * 90))
    size = size if size is not None else rng.choice([10, 50, 200, 800, 3000])
    kinds = kinds if kinds is not None else sorted(rng.sample(KINDS, rng.randrange(3)))
    peak = 12 <= at.hour < 18
    increase = truth(size, at.hour, kinds) + rng.gauss(0, 0.005)
    revenue = 5.0 + rng.gauss(0, 0.1)
    return {
        "branch": f"refs/heads/afdp/api/d-{i:04d}", "service": "api", "deployment": f"d-{i:04d}",
        "environment": "production", "version": f"v{i}", "commit": f"{i:040x}",
        "deployed_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "hour_utc": at.hour, "weekday_utc": at.weekday(),
        "weekday_name": at.strftime("%A").lower(), "change_size": size, "changed_files_count": max(1, size // 40),
        "changed_kinds": kinds, "imported": False, "decision": None,
        "label": "regression" if increase > 0.03 else "safe", "money_per_hour": revenue * 3600,
        "impact.latency.baseline": 0.045, "impact.latency.impact": 0.045 + increase, "impact.latency.change": increase / 0.045,
        "impact.latency.increase": increase, "impact.latency.effect_size": None, "impact.latency.p_value": None,
        "impact.latency.degraded": increase > 0.03,
        "impact.revenue.baseline": revenue, "impact.revenue.impact": revenue - 2 * increase, "impact.revenue.change": None,
        "impact.revenue.increase": -2 * increase, "impact.revenue.effect_size": None, "impact.revenue.p_value": None,
        "impact.revenue.degraded": False,
        "impact.requests.baseline": 400.0 if peak else 200.0, "impact.requests.impact": None, "impact.requests.change": None,
        "impact.requests.increase": rng.gauss(0, 3), "impact.requests.effect_size": None, "impact.requests.p_value": None,
        "impact.requests.degraded": None,
        "record_digests": [f"{i:064x}", f"{i + 100000:064x}"],
    }


def rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [make_row(i, rng) for i in range(n)]
