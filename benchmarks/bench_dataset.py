"""Benchmark: ``afdp dataset export`` over N deployments' evidence (figures, not assertions).

    python benchmarks/bench_dataset.py [--n 1000] [--long] [--jobs J] [--format parquet] [--dir DIR]

Builds N deployments' evidence with the ledger functions (no runs): per deployment a
genesis record (deployment metadata, changed files), a mark record, an analysis record
(four metrics), a decision record, a training record (citing them) and a seal, each signed with a dev key and
time-stamped by the embedded TSA over loopback HTTP. ``--long`` also runs N = 10,000.
``--dir`` keeps the built repositories there and reuses them on the next run.

Then times ``afdp dataset export`` in a fresh process (verification of every branch,
rows, datasheet), ``--repeat`` times, and prints the best wall time and rows/s, the CPU
time of the export and its workers (rows per CPU-second: what a shared, loaded machine
does not distort), the peak RSS of the largest process (the export or one of its
verification workers), and whether every export gave the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.names import branch_ref
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import EvidenceStore, init_repository
from afdp.evidence.trust import write_trust_policy
from afdp.pipeline.training import build_training_record

SERVICES = ("checkout", "search", "payments", "catalog")
FILES = ("src/app.py", "config/app.yaml", "db/migrations/0001.sql", "web/cart.tsx", "requirements.txt")
#: Records per deployment: genesis, mark, analysis, decision, training record, seal.
RECORDS = 6


def _metric(i: int, name: str) -> dict:
    base = 0.1 + (i % 7) * 0.01
    degraded = i % 11 == 0 and name == "latency_p99"
    impact = base * (1.6 if degraded else 1.0 + (i % 5) * 0.01)
    return {
        "status": "ok", "unit": {"symbol": "s", "dimension": "time", "factor": 1}, "better": "lower",
        "baseline": base, "impact": impact, "increase": impact - base, "change": (impact - base) / base,
        "factor": impact / base, "p_value": 0.001 if degraded else 0.3 + (i % 3) * 0.1,
        "significant": degraded, "exceeded": degraded, "degraded": degraded,
        "test": {"effect_size": {"name": "cliffs_delta", "value": 0.9 if degraded else 0.02 * (i % 4)}},
    }


def _deployment(args: tuple[Path, Path, str, int]) -> None:
    repo, key, url, i = args
    signer = load_signer(str(key))
    service = SERVICES[i % len(SERVICES)]
    deployment = f"d-{i:06d}"
    if EvidenceStore(repo).head(branch_ref(service, deployment)) is not None:
        return  # written by an earlier, interrupted build
    deployed_at = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
    files = list(FILES[: 1 + i % len(FILES)])
    info = {"commit": f"{i:040x}", "environment": "prod", "version": f"v{i}", "changed_files": files,
            "deployment_size": 10 + i % 400, "deployer": "ci", "deployed_at": deployed_at}
    metrics = {m: _metric(i, m) for m in ("latency_mean", "latency_p99", "errors_per_second", "requests_per_second")}
    degraded = any(m["degraded"] for m in metrics.values())
    analysis = {"metrics": metrics, "summary": {"any_degradation": degraded, "significant_degradation": degraded,
                                                "all_metrics_within_normal": not degraded, "inconclusive": []}}
    decision = {"decision": "rollback_on_regression" if degraded else "all_clear",
                "action": "rollback" if degraded else "mark_successful",
                "label": "regression_rolled_back" if degraded else "safe_deployment",
                "success_criteria_met": not degraded}
    # The genesis record goes first (the training record cites it): open with a marker step.
    written = append_record(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[url],
                            draft=rec.RecordDraft(kind=rec.KIND_STEP, step="mark_deployment_time",
                                                  result={"outputs": {"deployed_at": deployed_at}}),
                            genesis_metadata={"deployment": info})
    # The analysis and the decision are records of their own: the loader checks the
    # training record's impacts, decision and label against them.
    for step, result in (("analyze_differences", {"analysis": analysis, "outputs": {}}),
                         ("decisions", {"outputs": {}, "decision": decision, "action": {"status": "not_configured"}})):
        written += append_record(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[url],
                                 draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result))[-1:]
    cited = [{"step": w.step, "sequence": w.sequence, "sha256": w.envelope_sha256} for w in written]
    record = build_training_record(deployment={"service": service, "id": deployment, **info},
                                   analysis=analysis, decision=decision, cited=cited)
    append_record(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[url],
                  draft=rec.RecordDraft(kind=rec.KIND_STEP, step="generate_training_record",
                                        result={"record": record, "record_type": "training"}))
    seal(repo, service=service, deployment=deployment, signer=signer, tsa_urls=[url])


def build(root: Path, n: int, builders: int) -> tuple[Path, Path]:
    """Build (or reuse) N deployments under ``root``; return (repository, trust policy)."""
    repo, trust, done = root / "evidence", root / "trust.yaml", root / "BUILT"
    if done.exists():
        return repo, trust
    root.mkdir(parents=True, exist_ok=True)
    key = root / "dev.key"
    if not trust.exists():  # else: resume an interrupted build with its key and TSA
        init_repository(repo)
        generate_key(key)
        init_tsa(root / "tsa", force=True)
        write_trust_policy(trust, keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
    started = time.perf_counter()
    with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
        work = [(repo, key, server.url, i) for i in range(n)]
        if builders > 1:
            with ProcessPoolExecutor(builders) as pool:
                for count, _ in enumerate(pool.map(_deployment, work, chunksize=20), 1):
                    if count % 1000 == 0:
                        print(f"  ... {count}/{n} deployments written", file=sys.stderr)
        else:
            for count, item in enumerate(work, 1):
                _deployment(item)
                if count % 1000 == 0:
                    print(f"  ... {count}/{n} deployments written", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"built {n} deployments ({RECORDS * n} records) in {elapsed:.1f} s ({RECORDS * n / elapsed:.0f} records/s)")
    done.write_text(str(n))
    return repo, trust


def export(repo: Path, trust: Path, out: Path, fmt: str, jobs: int | None) -> tuple[float, float, int, dict]:
    import json

    argv = [sys.executable, "-m", "afdp", "dataset", "export", "--repo", str(repo), "--trust", str(trust),
            "--out", str(out), "--format", fmt, "--json"]
    if jobs:
        argv += ["--jobs", str(jobs)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(), check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"export failed ({done.returncode}): {done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, max(before.ru_maxrss, after.ru_maxrss), json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--long", action="store_true", help="also N = 10,000")
    parser.add_argument("--jobs", type=int, default=None, help="export --jobs (default: one per CPU)")
    parser.add_argument("--builders", type=int, default=2, help="processes writing the evidence")
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv", "jsonl"])
    parser.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the built evidence here")
    parser.add_argument("--repeat", type=int, default=2, help="exports per size (bytes compared across them)")
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="afdp-bench-dataset-"))
    sizes = [args.n] + ([10_000] if args.long and args.n != 10_000 else [])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpus} CPU(s); export --jobs {args.jobs or 'default'}; format {args.format}")
    for n in sizes:
        repo, trust = build(base / f"n{n}", n, args.builders)
        out = base / f"n{n}" / f"dataset.{args.format}"
        digests, walls, cpus, peak, summary = set(), [], [], 0, {}
        for _ in range(max(1, args.repeat)):
            elapsed, cpu, rss, summary = export(repo, trust, out, args.format, args.jobs)
            walls.append(elapsed)
            cpus.append(cpu)
            peak = max(peak, rss)
            digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
        rows, best, cpu = summary["used"], min(walls), min(cpus)
        load = os.getloadavg()[0]
        print(
            f"N={n:>6}: export best {best:6.1f} s wall ({rows / best:7.1f} rows/s), {cpu:6.1f} CPU-s "
            f"({rows / cpu:7.1f} rows per CPU-second, {RECORDS * n / cpu:7.1f} records verified per CPU-second); "
            f"peak RSS {peak / 1024:.0f} MiB; {rows} rows, {summary['excluded']} excluded; "
            f"{out.stat().st_size / 1024:.0f} KiB; byte-identical across {len(walls)} export(s): {len(digests) == 1}; "
            f"load average {load:.1f}"
        )


if __name__ == "__main__":
    main()
