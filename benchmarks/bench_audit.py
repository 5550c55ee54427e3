"""Audit benchmarks (figures, not assertions: machines are shared and noisy).

    python benchmarks/bench_audit.py [--runs 5] [--pdf]

Builds a 10-step deployment shaped like ``afdp run`` writes it (baseline and impact
series of 4 metrics x 120 samples, analysis, decision, sealed: 12 records) with the
embedded TSA over loopback HTTP, then times, as a user runs them (a fresh ``afdp``
process each time, start-up included):

1. ``afdp report --format html`` (target: under 3 s), and ``--format json``;
2. ``afdp export`` of the deployment;
3. ``afdp verify --bundle pkg/`` of the exported package (target: under 1 s);
4. with --pdf: ``afdp report --format pdf`` (headless Chromium + PAdES signature).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import write_trust_policy

METRICS = ("latency_p99", "latency_mean", "error_rate", "requests_per_second")


def build(repo: Path, signer, url: str) -> int:
    """Write a 10-step run-shaped deployment; return its record count."""
    rnd = random.Random(3)
    now = time.time()

    def add(step: str, result, attachments=None) -> None:
        draft = rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result, attachments=attachments or {})
        append_record(repo, service="api", deployment="d-10", draft=draft, signer=signer, tsa_urls=[url],
                      genesis_metadata={"deployment": {"commit": "0f3c2a9", "deployer": "alice"}})

    def series(role: str, start: float, level: float) -> dict[str, bytes]:
        import json

        return {
            f"{m}.json": json.dumps({"metric": m, "unit": "s", "samples": [[start + i, level + rnd.random()] for i in range(120)], "provenance": {}}).encode()
            for m in METRICS
        }

    add("capture_baseline", {"role": "baseline", "series": {}}, series("baseline", now - 300, 1.0))
    add("wait_for_signal", {"signal": "go"})
    add("mark_deployment_time", {"outputs": {"deployed_at": rec.format_time(rec.utc_now())}})
    add("capture_deployment_metadata", {"git_commit": "0f3c2a9", "deployer_id": "alice"})
    add("wait", {"waited_seconds": 1})
    add("capture_impact", {"role": "impact", "series": {}}, series("impact", now + 60, 1.4))
    metric = {"baseline": 1.5, "impact": 1.9, "increase": 0.4, "change": 0.27, "p_value": 1e-6, "significant": True, "degraded": True, "status": "ok", "unit": {"symbol": "s", "dimension": "time", "factor": 1}}
    add("analyze_differences", {"analysis": {"metrics": {m: metric for m in METRICS}, "summary": {"any_degradation": True}}})
    add("decisions", {"decision": {"decision": "rollback_on_regression", "action": "rollback", "reason": "latency_p99.degraded", "success_criteria_met": False}})
    add("rollback", {"status": "ok"})
    add("generate_training_record", {"label": "regression_rolled_back"})
    seal(repo, service="api", deployment="d-10", signer=signer, tsa_urls=[url])
    return 12  # genesis + 10 steps + seal


def timed(command: list[str], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pdf", action="store_true", help="also time the signed PDF report")
    args = parser.parse_args()
    afdp = [sys.executable, "-m", "afdp"]
    with tempfile.TemporaryDirectory(prefix="afdp-bench-audit-") as folder:
        work = Path(folder)
        init_tsa(work / "tsa", force=True)
        generate_key(work / "dev.key")
        write_trust_policy(work / "trust.yaml", keys=[work / "dev.key.pub"], tsa_roots=[work / "tsa" / "root.pem"])
        init_repository(work / "evidence")
        with serve(EmbeddedTSA.load(work / "tsa"), host="127.0.0.1", port=0) as server:
            build(work / "evidence", load_signer(str(work / "dev.key")), server.url)
            branch = ["--repo", str(work / "evidence"), "--service", "api", "--deployment", "d-10", "--trust", str(work / "trust.yaml")]
            print("10-step deployment (12 records, 4 metrics x 120 samples per side), median/max of", args.runs, "runs:")
            median, worst = timed([*afdp, "report", *branch, "--out", str(work / "r.html")], args.runs)
            size = (work / "r.html").stat().st_size
            print(f"  afdp report --format html   {median:6.3f} s (max {worst:.3f} s; {size / 1024:.0f} KiB)   target < 3 s")
            median, worst = timed([*afdp, "report", *branch, "--out", str(work / "r.json")], args.runs)
            print(f"  afdp report --format json   {median:6.3f} s (max {worst:.3f} s)")
            median, worst = timed([*afdp, "export", *branch, "--out", str(work / "pkg")], 1)
            print(f"  afdp export                 {median:6.3f} s")
            # --trust: without it the package's own policy is used and the exit code is 1
            median, worst = timed([*afdp, "verify", "--bundle", str(work / "pkg"), "--trust", str(work / "trust.yaml")], args.runs)
            print(f"  afdp verify --bundle pkg/   {median:6.3f} s (max {worst:.3f} s)   target < 1 s")
            median, worst = timed([*afdp, "verify", "--help"], args.runs)
            print(f"  (afdp verify --help         {median:6.3f} s: interpreter and CLI start-up)")
            if args.pdf:
                median, worst = timed([*afdp, "report", *branch, "--out", str(work / "r.pdf"), "--sign-key", str(work / "dev.key"), "--tsa", server.url], max(1, args.runs // 2))
                print(f"  afdp report --format pdf    {median:6.3f} s (max {worst:.3f} s; Chromium print + PAdES-T)")


if __name__ == "__main__":
    main()
