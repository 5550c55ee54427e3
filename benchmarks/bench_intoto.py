"""AFDP beside in-toto: record and verify the same JSON products, same N, same machine.

``python benchmarks/bench_intoto.py`` (N = 100, 1,000 and 10,000; ``--long`` adds
100,000, verify only: AFDP's branch is built with one batch, not timed per record)
prints, per N, the time per record and records per second of:

- **in-toto 3.1** (a benchmark-only dependency: ``pip install in-toto``): one
  ``in_toto_run`` per record with a DSSE envelope signed by an ECDSA P-256 key over one
  JSON product file, dumped to a ``.link`` file; verified two ways: "sig-only" loads
  each link and checks its DSSE signature (no layout, no time-stamp, no chain), and
  ``in_toto_verify`` (the function issue 14 names) checks a DSSE-signed layout of the N
  steps (each expecting its one product, nothing else) against the N links: layout
  signature and expiry, every link's signature and threshold, the artifact rules;
- **AFDP**: ``append_record`` of the same JSON as a step result, one call per record
  (and, as "AFDP batch", one ``append_records`` call for all N: the same records,
  signatures, tokens and commits) (DSSE ECDSA P-256,
  an RFC 3161 time-stamp from the embedded TSA over loopback HTTP, a signed Git commit),
  then ``check_branch``: schema, signature, digests, every time-stamp token against its
  TSA root, the commit signature and the Git chain.

and the ratios AFDP / in-toto (against sig-only, then against ``in_toto_verify``), per N the median and p95 of one record for each (AFDP's
first append, which also writes the branch's genesis record, is in the per-N time but
not in the one-record figures; both tools' modules are imported before the clocks
start), and the
CPU time of the recording process per record (steadier than wall time on a shared
machine; with the TSA on a thread of the recording process it includes the TSA's work,
with ``--external-tsa`` it does not).
``--external-tsa`` serves the embedded TSA from a child process (as ``afdp tsa serve``
or a TSA elsewhere would be) instead of a thread of the recording process; only then
does AFDP write a record's envelope while its time-stamp request is in flight (a TSA
on a thread of the writer needs the same interpreter lock, so the envelope is written
first; see docs/evidence.md, "Speed"). The two do not the same work: AFDP's verification also
checks what in-toto's signature-only pass does not (time-stamps, chain, commits), which
is the point of the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record, append_records
from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
from afdp.evidence.signing import generate_key, load_signer
from afdp.evidence.store import init_repository
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch


def product(i: int) -> dict[str, object]:
    return {"i": i, "p99_ms": 100.0 + i % 13, "error_rate": 0.01 * (i % 5), "ok": True}


def intoto(
    n: int, root: Path, record: bool = True, times: list[float] | None = None, cpu: list[float] | None = None
) -> tuple[float, float, float]:
    """Record n links; return (record seconds, signature-only verify seconds,
    ``in_toto_verify`` seconds)."""
    from in_toto.models.layout import Layout, Step
    from in_toto.models.link import FILENAME_FORMAT
    from in_toto.models.metadata import Envelope, Metadata
    from in_toto.runlib import in_toto_run
    from in_toto.verifylib import in_toto_verify
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ecdsa()
    keyid = signer.public_key.keyid
    key = signer.public_key.to_dict()
    key["keyid"] = keyid
    work = root / "intoto"
    work.mkdir()
    links = []
    cwd = os.getcwd()
    os.chdir(work)
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(n):
            one = time.perf_counter()
            name = f"product-{i}.json"
            Path(name).write_text(json.dumps(product(i)))
            link = in_toto_run(f"step{i}", [], [name], [], use_dsse=True, signer=signer)
            path = FILENAME_FORMAT.format(step_name=f"step{i}", keyid=keyid)
            link.dump(path)
            links.append(path)
            if times is not None:
                times.append(time.perf_counter() - one)
        recorded = time.perf_counter() - started
        if cpu is not None:
            cpu.append(time.process_time() - cpu_started)
        started = time.perf_counter()
        for path in links:
            Metadata.load(path).verify_signature(key)
        verified = time.perf_counter() - started
        # in_toto_verify (what issue 14 names): a layout of n steps, each expecting its
        # one product and nothing else, signed by the same key (DSSE); it checks the
        # layout's signature and expiry, every link's signature and threshold, and the
        # artifact rules. Making and signing the layout is not timed.
        layout = Layout(
            steps=[
                Step(
                    name=f"step{i}",
                    pubkeys=[keyid],
                    expected_products=[["CREATE", f"product-{i}.json"], ["DISALLOW", "*"]],
                    threshold=1,
                )
                for i in range(n)
            ],
            keys={keyid: key},
        )
        layout.set_relative_expiration(days=1)
        envelope = Envelope.from_signable(layout)
        envelope.create_signature(signer)
        started = time.perf_counter()
        in_toto_verify(envelope, {keyid: key}, link_dir_path=".")
        full = time.perf_counter() - started
    finally:
        os.chdir(cwd)
    return recorded, verified, full


def afdp(
    n: int,
    root: Path,
    batch: bool = False,
    jobs: int | None = None,
    times: list[float] | None = None,
    external_tsa: bool = False,
    cpu: list[float] | None = None,
) -> tuple[float, float]:
    init_tsa(root / "tsa")
    generate_key(root / "dev.key")
    write_trust_policy(root / "trust.yaml", keys=[root / "dev.key.pub"], tsa_roots=[root / "tsa" / "root.pem"])
    policy = load_trust_policy(root / "trust.yaml")
    signer = load_signer(str(root / "dev.key"))
    repo = root / "evidence"
    init_repository(repo, bare=True)
    # Both tools' modules are imported before their clocks start (in-toto's in intoto());
    # AFDP imports its HTTP client on the first time-stamp (verification never needs it),
    # and httpx's import pulls its command-line part (click, rich) and, where installed,
    # trio: about 0.2 s once per process, which is not the cost of a record.
    import httpx  # noqa: F401

    import afdp.deadline  # noqa: F401
    import afdp.evidence.timestamp.request  # noqa: F401

    with tsa_server(root / "tsa", external_tsa) as url:
        started, cpu_started = time.perf_counter(), time.process_time()
        if batch:
            drafts = (rec.RecordDraft(kind=rec.KIND_STEP, step=f"step{i}", result=product(i)) for i in range(n))
            append_records(repo, service="api", deployment="bench", drafts=drafts, signer=signer, tsa_urls=[url])
        else:
            for i in range(n):
                one = time.perf_counter()
                draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"step{i}", result=product(i))
                append_record(repo, service="api", deployment="bench", draft=draft, signer=signer, tsa_urls=[url])
                # the first append also writes the genesis record
                if times is not None and i > 0:
                    times.append(time.perf_counter() - one)
        recorded = time.perf_counter() - started
        if cpu is not None:
            cpu.append(time.process_time() - cpu_started)
    started = time.perf_counter()
    report = check_branch(repo, service="api", deployment="bench", policy=policy, allow_unsealed=True, jobs=jobs)
    verified = time.perf_counter() - started
    assert report.ok and len(report.records) == n + 1, report.failures[:3]
    return recorded, verified


def _serve_child(directory: Path, urls: Any) -> None:
    with serve(EmbeddedTSA.load(directory), host="127.0.0.1", port=0) as server:
        urls.put(server.url)
        server.wait()


@contextlib.contextmanager
def tsa_server(directory: Path, external: bool) -> Iterator[str]:
    """The embedded TSA's URL: served by a thread of this process, or (``external``) by
    a child process, as ``afdp tsa serve`` or a TSA elsewhere would be."""
    if not external:
        with serve(EmbeddedTSA.load(directory), host="127.0.0.1", port=0) as server:
            yield server.url
        return
    context = multiprocessing.get_context("spawn")
    urls = context.Queue()
    child = context.Process(target=_serve_child, args=(directory, urls), daemon=True)
    child.start()
    try:
        yield urls.get(timeout=60)
    finally:
        child.terminate()
        child.join(10)


def _ms(times: list[float]) -> str:
    if len(times) < 2:
        return "n/a"
    return f"median {statistics.median(times) * 1000:.2f} ms, p95 {statistics.quantiles(times, n=20)[-1] * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="also N = 100,000 (verify only)")
    parser.add_argument("--sizes", type=int, nargs="*", help="the N values (default 100 1000 10000)")
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="build AFDP's branch with one batch and time verification only (no per-record timing)",
    )
    parser.add_argument("--jobs", type=int, help="AFDP verify worker processes (default: check_branch's choice)")
    parser.add_argument(
        "--external-tsa",
        action="store_true",
        help="serve AFDP's embedded TSA from a child process instead of a thread of the recording process",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="where both write their files (default: the system temporary folder); both "
        "always write to the same file system, whose cost of creating a file dominates",
    )
    args = parser.parse_args()
    try:
        import in_toto  # noqa: F401
    except ImportError:
        sys.exit("in-toto is a benchmark-only dependency: pip install 'in-toto>=3'")
    sizes = args.sizes or [100, 1000, 10_000]
    if args.long and not args.sizes:
        sizes.append(100_000)
    where = "a child process" if args.external_tsa else "the recording process"
    print(
        f"files under {args.dir or tempfile.gettempdir()}; load average {os.getloadavg()[0]:.2f}; "
        f"AFDP's TSA served by {where}"
    )
    print(
        f"{'N':>7} | {'in-toto record':>15} {'AFDP record':>12} {'diff':>8} {'AFDP batch':>11} {'diff':>8} | "
        f"{'in-toto sig-only':>15} {'in_toto_verify':>15} {'AFDP verify':>12} {'ratio':>6} {'ratio':>6}"
    )
    for n in sizes:
        verify_only = args.verify_only or n >= 100_000
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            root = Path(tmp)
            for name in ("a", "b", "c"):
                (root / name).mkdir()
            it_times: list[float] = []
            af_times: list[float] = []
            it_cpu: list[float] = []
            af_cpu: list[float] = []
            t_rec, t_ver, t_full = intoto(n, root / "a", times=it_times, cpu=it_cpu)
            external = args.external_tsa
            if verify_only:
                b_rec, a_ver = afdp(n, root / "c", batch=True, jobs=args.jobs, external_tsa=external)
                a_rec = float("nan")
            else:
                a_rec, a_ver = afdp(n, root / "b", jobs=args.jobs, times=af_times, external_tsa=external, cpu=af_cpu)
                b_rec, _ = afdp(n, root / "c", batch=True, jobs=args.jobs, external_tsa=external)
        # AFDP verifies n + 1 records (its genesis record too); rates are per record.
        it_rec_ms, af_rec_ms, ab_rec_ms = t_rec / n * 1000, a_rec / n * 1000, b_rec / n * 1000
        it_rate, it_full_rate, af_rate = n / t_ver, n / t_full, (n + 1) / a_ver
        print(
            f"{n:>7} | {it_rec_ms:>12.2f} ms {af_rec_ms:>9.2f} ms {af_rec_ms - it_rec_ms:>+6.2f}ms "
            f"{ab_rec_ms:>8.2f} ms {ab_rec_ms - it_rec_ms:>+6.2f}ms | "
            f"{it_rate:>9.0f} rec/s {it_full_rate:>9.0f} rec/s {af_rate:>6.0f} rec/s "
            f"{af_rate / it_rate:>6.2f} {af_rate / it_full_rate:>6.2f}",
            flush=True,
        )
        if af_times:
            print(f"{'':>7}   one record: in-toto {_ms(it_times)}; AFDP {_ms(af_times)}", flush=True)
            print(
                f"{'':>7}   CPU of the recording process per record: in-toto {it_cpu[0] / n * 1000:.2f} ms; "
                f"AFDP {af_cpu[0] / n * 1000:.2f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
