"""Writers racing on one branch: records per second and time-stamps spent per record.

``python benchmarks/bench_contention.py --writers 8 --records 25`` starts the embedded
TSA (counting what it answers), then N writer processes that each append R records to
the same branch with ``append_record``, and prints the rate and the stamps per record.
Writers take turns on a branch (``EvidenceStore.branch_turn``), so the ideal is 1.00
stamp per record; before the turns every lost compare-and-swap re-signed and re-stamped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch

WRITER = """
import sys
from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record
from afdp.evidence.signing import load_signer
repo, key, url, name, count = sys.argv[1:6]
signer = load_signer(key)
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(count)):
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"{name}-{i}", result={"writer": name, "i": i})
    append_record(repo, service="api", deployment="race", draft=draft, signer=signer, tsa_urls=[url])
"""


class CountingTSA(EmbeddedTSA):
    answered = 0
    _count = threading.Lock()

    def respond(self, request_der: bytes) -> bytes:
        with self._count:
            CountingTSA.answered += 1
        return super().respond(request_der)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--records", type=int, default=25, help="records per writer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        repo = root / "evidence"
        init_repository(repo, bare=True)
        with serve(CountingTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, str(repo), str(root / "dev.key"), server.url, f"w{n}", str(args.records)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )
                for n in range(args.writers)
            ]
            for proc in procs:  # wait until every writer has imported and loaded its key
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            started = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in procs:
                proc.wait()
                assert proc.returncode == 0
            elapsed = time.perf_counter() - started
        write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
        report = check_branch(repo, service="api", deployment="race", policy=load_trust_policy(root / "trust.yaml"), allow_unsealed=True)
        assert report.ok, report.failures[:3]
        records = args.writers * args.records + 1
        assert len(report.records) == records
        print(
            f"{args.writers} writers x {args.records} records: {records / elapsed:.1f} records/s, "
            f"{CountingTSA.answered} time-stamps for {records} records "
            f"({CountingTSA.answered / records:.2f} per record, {CountingTSA.answered - records} wasted)"
        )


if __name__ == "__main__":
    main()
