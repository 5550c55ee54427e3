"""Ledger benchmarks (figures, not assertions: machines are shared and noisy).

    python benchmarks/bench_ledger.py [--records 10000] [--small 100] [--appends 200]

1. record: end-to-end append (canonicalize, hash, sign, time-stamp over loopback HTTP
   with the embedded TSA, commit, compare-and-swap), median and p95 per record;
2. verify: records/s for a long branch and a short one, and the per-record cost ratio
   (linearity: the long branch should cost within 1.5x per record of the short one);
3. start-up: ``afdp verify --help`` wall time (no Prefect on that path).
"""

from __future__ import annotations

import argparse
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
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch


def build(repo: Path, signer, url: str, deployment: str, n: int, times: list[float] | None = None) -> None:
    for i in range(n):
        draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"step{i % 7}", result={"i": i, "p99_ms": 100.0 + i % 13, "ok": True})
        started = time.perf_counter()
        append_record(repo, service="api", deployment=deployment, draft=draft, signer=signer, tsa_urls=[url])
        if times is not None:
            times.append(time.perf_counter() - started)
        if n >= 1000 and i % 1000 == 0:
            print(f"  ... {i}/{n} records written", file=sys.stderr)
    seal(repo, service="api", deployment=deployment, signer=signer, tsa_urls=[url])


def timed_verify(repo: Path, policy, deployment: str, runs: int = 3) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        report = check_branch(repo, service="api", deployment=deployment, policy=policy)
        best = min(best, time.perf_counter() - started)
        assert report.ok, report.failures[:3]
        count = len(report.records)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
        policy = load_trust_policy(root / "trust.yaml")
        signer = load_signer(str(root / "dev.key"))
        repo = root / "evidence"
        init_repository(repo, bare=True)
        with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
            times: list[float] = []
            build(repo, signer, server.url, "appends", args.appends, times)
            times = times[1:]  # the first append also writes the genesis record
            q = statistics.quantiles(times, n=20)
            print(f"record: n={len(times)} median={statistics.median(times) * 1000:.2f} ms p95={q[-1] * 1000:.2f} ms (target median <= 10 ms)")
            build(repo, signer, server.url, "small", args.small)
            print(f"building a {args.records}-record branch ...", file=sys.stderr)
            started = time.perf_counter()
            build(repo, signer, server.url, "large", args.records)
            print(f"  built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        small_s, small_n = timed_verify(repo, policy, "small")
        large_s, large_n = timed_verify(repo, policy, "large", runs=2)
        print(f"verify small: {small_n} records in {small_s:.3f} s = {small_n / small_s:.0f} records/s ({small_s / small_n * 1000:.3f} ms/record)")
        print(f"verify large: {large_n} records in {large_s:.3f} s = {large_n / large_s:.0f} records/s ({large_s / large_n * 1000:.3f} ms/record; target >= 1000/s)")
        print(f"per-record cost ratio large/small: {(large_s / large_n) / (small_s / small_n):.2f} (target <= 1.5)")
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "afdp", "verify", "--help"], capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    print(f"afdp verify --help: median {statistics.median(samples) * 1000:.0f} ms (target < 500 ms)")


if __name__ == "__main__":
    main()
