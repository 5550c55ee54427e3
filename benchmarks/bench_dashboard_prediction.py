"""Benchmark: the dashboard's prediction for a service (figures, not assertions).

    python benchmarks/bench_dashboard_prediction.py [--n 60]

Builds N verified deployments of one service with the tests' ledger helper
(``tests/test_dashboard_predictions.py``: signed with a fresh dev key, time-stamped by
the embedded TSA over loopback HTTP), records the service's model as ``afdp predict
--key --tsa`` does, then times :meth:`afdp.service.dashboard.Dashboard.prediction`:
the first call (model branch and every deployment branch verified, the model refit) and
three cached calls.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve  # noqa: E402
from afdp.evidence.signing import generate_key, load_signer  # noqa: E402
from afdp.evidence.store import init_repository  # noqa: E402
from afdp.evidence.trust import write_trust_policy  # noqa: E402
from afdp.service.dashboard import Dashboard  # noqa: E402
from afdp.service.metrics import ServiceMetrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="verified deployments of the service (20 to 336)")
    args = parser.parse_args()
    from test_dashboard_predictions import SERVICE, record_a_model, write_history

    base = Path(tempfile.mkdtemp(prefix="afdp-bench-prediction-"))
    init_tsa(base / "tsa", force=True)
    generate_key(base / "dev.key")
    with serve(EmbeddedTSA.load(base / "tsa"), host="127.0.0.1", port=0) as server:
        repo = base / "evidence"
        init_repository(repo)
        trust = base / "trust.yaml"
        write_trust_policy(trust, keys=[base / "dev.key.pub"], tsa_roots=[base / "tsa" / "root.pem"])
        signer = load_signer(str(base / "dev.key"))
        started = time.perf_counter()
        write_history(repo, signer, server.url, n=args.n)
        print(f"history of {args.n} deployments written: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        record_a_model(repo, trust, signer, server.url)
        print(f"model trained and recorded: {time.perf_counter() - started:.1f} s")
        dashboard = Dashboard(repo, trust_policy=trust, metrics=ServiceMetrics())
        started = time.perf_counter()
        found = dashboard.prediction(SERVICE)
        print(f"first view: {time.perf_counter() - started:.2f} s (status {found.status})")
        for _ in range(3):
            started = time.perf_counter()
            dashboard.prediction(SERVICE)
            print(f"cached view: {(time.perf_counter() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
