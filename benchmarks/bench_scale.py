"""Verification at scale: time per record and peak memory, from 100 to 100,000 records.

    python benchmarks/bench_scale.py [--long] [--sizes N ...] [--jobs J] [--dir DIR] [--keep DIR]

(sizes 100, 1,000 and 10,000; ``--long`` adds 100,000)

Builds one branch per size with ``append_records`` (each record signed, time-stamped by
the embedded TSA over loopback HTTP and committed with a signed commit, as always; a
batch only shares the branch turn and the ref update), then verifies each branch in a
fresh Python process (``check_branch``, every check) and prints, per size: records per
second, microseconds per record (wall clock, and CPU time of the verifying process and
its workers), and the peak resident memory of the verifying process
and of its worker processes (``ru_maxrss``). Linear means the same time per record at
every size; flat memory means peak memory that does not grow with the branch: with
``--summary`` (``keep_records=False``) none at all; by default the report itself keeps
one small entry per record. ``--keep DIR`` keeps the built branches for later runs.

``--components`` (one process: ``--jobs 1``) also prints where a record's CPU goes: each
part of the verification (``COMPONENTS``) is wrapped and timed by CPU clock, exclusive of
the parts it calls; the wrappers themselves cost about a microsecond a call, so the total
with them is shown beside the plain run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_records
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import write_trust_policy

_VERIFY = """
import json, resource, sys, time
from pathlib import Path

import pygit2
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch
repo, trust, deployment, jobs, keep, components = sys.argv[1:7]
policy = load_trust_policy(Path(trust))
spent = {}
if components:
    import functools, importlib
    stack = []

    def timed(owner, name, label):
        original = getattr(owner, name, None)
        if original is None:  # another version of AFDP: not there
            return

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            started = time.process_time()
            stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                took = time.process_time() - started
                inner = stack.pop()
                spent[label] = spent.get(label, 0.0) + took - inner
                if stack:
                    stack[-1] += took
        setattr(owner, name, wrapper)

    for path, name, label in json.loads(components):
        module, _, attribute = path.partition(":")
        owner = importlib.import_module(module)
        if attribute:
            owner = getattr(owner, attribute)
        timed(owner, name, label)
started, cpu_started = time.perf_counter(), time.process_time()
report = check_branch(repo, service="api", deployment=deployment, policy=policy, allow_unsealed=True,
                      jobs=int(jobs) if jobs else None, keep_records=keep == "1")
elapsed = time.perf_counter() - started
cpu = time.process_time() - cpu_started
children = resource.getrusage(resource.RUSAGE_CHILDREN)
assert report.ok, report.failures[:3]
print(json.dumps({
    "records": report.record_count,
    "seconds": elapsed,
    "cpu_seconds": cpu + children.ru_utime + children.ru_stime,
    "rss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "components": spent,
}))
"""

#: What ``--components`` times: (module[:class], function, label), each exclusive of the
#: others it calls. Names are wrapped where the caller looks them up.
COMPONENTS = [
    ("afdp.evidence.store.read:StoreReader", "history_ids", "Git: the history walk (first parents, libgit2)"),
    ("afdp.evidence.store.read:StoreReader", "signed_commit_files", "Git: the commit, its new trees and files (libgit2), tree checks"),
    ("afdp.evidence.timestamp.verify", "_signer_parts", "token: asn1crypto reads it"),
    ("afdp.evidence.timestamp.verify", "signed_attributes_problem", "token: signed-attribute rules"),
    ("afdp.evidence.timestamp.chains", "signed_attributes_problem", "token: signed-attribute rules"),
    ("afdp.evidence.timestamp.verify", "_cms_signature_ok", "token: CMS signature (RSA) on the remembered chain"),
    ("afdp.evidence.timestamp", "verify_timestamp", "token: rfc3161-client parse, status, imprint, rest"),
    ("afdp.verify.checks", "verify_signature", "DSSE signature (ECDSA P-256)"),
    ("afdp.evidence.sshsig", "verify_signature", "SSH commit signature (ECDSA P-256)"),
    ("afdp.verify.checks", "check_commit_signature", "SSH commit signature: armor and SSHSIG read"),
    ("afdp.verify.checks", "check_message", "commit message regenerated and compared"),
    ("afdp.verify.checks", "canonical_bytes", "RFC 8785: statement and result"),
    ("afdp.evidence.records", "envelope_json", "RFC 8785: envelope re-encoded"),
    ("afdp.verify.checks", "load_json", "JSON parse: envelope and payload"),
    ("afdp.evidence.schemas", "iter_errors", "JSON Schema (jsonschema-rs)"),
    ("afdp.verify.verifier", "check_record", "record checks: the rest (base64, digests, identity, time)"),
    ("afdp.verify.verifier", "check_records", "record checks: the rest (base64, digests, identity, time)"),
    ("afdp.verify.verifier", "_check_commit", "commit checks: the rest"),
    ("afdp.verify.verifier", "_commit_checks", "commit checks: the rest"),
    ("afdp.verify.chain:ChainWalk", "add", "chain checks (12-15)"),
]


def product(i: int) -> dict[str, object]:
    return {"i": i, "p99_ms": 100.0 + i % 13, "error_rate": 0.01 * (i % 5), "ok": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", help="default 100 1000 10000")
    parser.add_argument("--long", action="store_true", help="also 100,000 records")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="verify with keep_records=False (a report of counts and failures, no per-record entries)",
    )
    parser.add_argument("--jobs", type=int, help="verify worker processes (default: check_branch's choice)")
    parser.add_argument(
        "--components",
        action="store_true",
        help="also print where a record's CPU goes, by part of the verification (needs --jobs 1)",
    )
    parser.add_argument("--dir", type=Path, help="where to build (default: the system temporary folder)")
    parser.add_argument(
        "--keep",
        type=Path,
        help="build in this folder and keep it; a later run with the same folder reuses the branches already built",
    )
    args = parser.parse_args()
    if args.components and args.jobs != 1:
        parser.error("--components times one process: give --jobs 1")
    args.sizes = args.sizes or [100, 1000, 10_000] + ([100_000] if args.long else [])
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = args.keep
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.dir)))
        run(root, args)


def run(root: Path, args: argparse.Namespace) -> None:
    repo = root / "evidence"
    if not (root / "trust.yaml").exists():
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
        init_repository(repo, bare=True)
    signer = load_signer(str(root / "dev.key"))
    built = set(pygit2.Repository(str(repo)).references)
    with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
        for n in args.sizes:
            if f"refs/heads/afdp/api/n{n}" in built:
                continue
            started = time.perf_counter()
            # in chunks of 5,000: each chunk one batch (one ref update), the chain one
            for first in range(0, n, 5000):
                drafts = (
                    rec.RecordDraft(kind=rec.KIND_STEP, step=f"step{i % 7}", result=product(i))
                    for i in range(first, min(n, first + 5000))
                )
                append_records(repo, service="api", deployment=f"n{n}", drafts=drafts, signer=signer, tsa_urls=[server.url])
            elapsed = time.perf_counter() - started
            print(f"built {n} records in {elapsed:.1f} s ({elapsed / n * 1000:.2f} ms/record)", file=sys.stderr, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'records':>8} | {'rec/s':>7} {'us/record':>10} {'CPU us/rec':>10} | {'peak RSS verify':>16} {'workers':>9}")
    for n in args.sizes:
        done = subprocess.run(
            [
                sys.executable, "-c", _VERIFY, str(repo), str(root / "trust.yaml"), f"n{n}", str(args.jobs or ""),
                "0" if args.summary else "1", json.dumps(COMPONENTS) if args.components else "",
            ],
            capture_output=True, text=True,
        )
        if done.returncode:
            sys.exit(f"verify of n{n} failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout)
        rate = result["records"] / result["seconds"]
        print(
            f"{result['records']:>8} | {rate:>7.0f} {1e6 / rate:>10.0f} {1e6 * result['cpu_seconds'] / result['records']:>10.0f} | "
            f"{result['rss_self_mib']:>12.0f} MiB {result['rss_workers_mib']:>5.0f} MiB",
            flush=True,
        )
        if args.components:
            spent = result["components"]
            total = result["cpu_seconds"]
            print(f"{'':>8}   where a record's CPU goes (us; {1e6 * total / result['records']:.0f} with the timers):")
            for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
                print(f"{'':>8}   {1e6 * seconds / result['records']:>7.1f}  {label}")
            rest = total - sum(spent.values())
            print(f"{'':>8}   {1e6 * rest / result['records']:>7.1f}  the rest (check_branch, imports, start-up)", flush=True)


if __name__ == "__main__":
    main()
