"""Many deployments: ``verify --all`` sequential against parallel, ``afdp find`` cold
against warm, and pushing every branch to a central remote.

``python benchmarks/bench_fleet.py --branches 40 --records 6`` writes N sealed branches
of R records each (embedded TSA, dev key), then prints the time of ``check_all`` with
one worker and with every core, of a lookup that reads every branch (cold index) and
of one that reuses the index (warm), and of ``push_branches`` creating all N branches
on a fresh ``file://`` remote and finding them up to date the second time, and creating
them on another with ``--trust`` (each branch verified before it is sent).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from afdp.audit.find import find_deployments, make_query
from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, seal
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.remote import init_remote, push_branches
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.gate import TrustGate
from afdp.verify.verifier import check_all


def timed(label: str, work):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = work()
    print(f"{label}: {time.perf_counter() - started:.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branches", type=int, default=40)
    parser.add_argument("--records", type=int, default=6, help="step records per branch (plus genesis and seal)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["AFDP_INDEX_KEY"] = str(root / "index.key")
        init_tsa(root / "tsa")
        generate_key(root / "dev.key")
        signer = load_signer(str(root / "dev.key"))
        repo = root / "evidence"
        init_repository(repo)
        with serve(EmbeddedTSA.load(root / "tsa"), host="127.0.0.1", port=0) as server:
            for n in range(args.branches):
                for i in range(args.records):
                    context = {"step": {"kind": "mark"}} if i == 0 else {}
                    result = {"outputs": {"deployed_at": "2026-11-01T00:00:00.000Z"}} if i == 0 else {"i": i}
                    draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"s{i}", result=result, context=context)
                    append_record(repo, service=f"svc{n % 4}", deployment=f"d-{n}", draft=draft, signer=signer, tsa_urls=[server.url])
                seal(repo, service=f"svc{n % 4}", deployment=f"d-{n}", signer=signer, tsa_urls=[server.url])
        write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
        policy = load_trust_policy(root / "trust.yaml")
        cores = len(os.sched_getaffinity(0))
        print(f"{args.branches} branches x {args.records + 2} records, {cores} core(s)")
        one = timed("verify --all, 1 worker", lambda: check_all(repo, policy=policy, jobs=1))
        many = timed(f"verify --all, {cores} workers", lambda: check_all(repo, policy=policy, jobs=cores))
        assert all(r.ok for r in one) and all(r.ok for r in many) and len(one) == args.branches
        query = make_query(commit=None, image=None, service="svc1", since="2026-10-01")
        cold = timed("find --service --since, cold index", lambda: find_deployments(repo, query))
        warm = timed("find --service --since, warm index", lambda: find_deployments(repo, query))
        assert len(cold.hits) == len(warm.hits) == len(range(1, args.branches, 4)) and warm.index.reused == args.branches
        remote = root / "central.git"
        init_remote(remote)
        created = timed(f"push --all ({args.branches} new branches, file://)", lambda: push_branches(repo, remote.as_uri()))
        again = timed("push --all again (all up to date)", lambda: push_branches(repo, remote.as_uri()))
        assert created.ok and all(b.outcome == "up-to-date" for b in again.branches)
        gated = root / "central-gated.git"
        init_remote(gated)
        with TrustGate(policy) as gate:
            checked = timed(f"push --all --trust ({args.branches} new branches, each verified first)",
                            lambda: push_branches(repo, gated.as_uri(), gate=gate))
        assert checked.ok and {b.verification for b in checked.branches} == {"verified"}


if __name__ == "__main__":
    main()
