"""Verification in memory that does not grow with the branch, and no weaker for it.

- the chain checks run as records arrive in chain order (``ChainWalk``): the walk holds
  the previous record's facts and one (step, digest) pair per record for the seal, never
  every record's facts; it reports exactly what checking the whole list reported;
- ``keep_records=False`` gives a report without per-record entries (count, signers,
  import marker only), with the same failures, the same verdict and no empty record list
  that would read as "no records";
- libgit2's object cache is emptied after each run of commits, so a walk holds one run's
  objects, not the whole history's.
"""

from __future__ import annotations

import gc
import itertools
import json
import weakref

import pygit2
import pytest
from conftest import build_deployment
from tamper import edit, read_branch, with_file, write_branch

from afdp.evidence import records as rec
from afdp.evidence.trust import load_trust_policy
from afdp.verify.chain import ChainWalk, Slot
from afdp.verify.checks import RecordFacts
from afdp.verify.report import Failure
from afdp.verify.verifier import check_all, check_branch


def _check(repo, trust_file, **kw):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), **kw)


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=4)  # records 0..4 + seal 5
    return repo


def test_summary_report_of_a_clean_branch(sealed, trust_file):
    full = _check(sealed, trust_file)
    summary = _check(sealed, trust_file, keep_records=False)
    assert full.ok and summary.ok and summary.state == full.state == "verified"
    assert full.records_kept and len(full.records) == full.record_count == 6
    assert not summary.records_kept and summary.records == ()
    assert summary.record_count == 6
    assert summary.signers == full.signers and summary.signers
    assert summary.imported is full.imported is False
    document = summary.to_json()
    assert document["record_count"] == 6
    assert document["records"] is None  # not [], which would read as "no records"
    assert full.to_json()["records"] and full.to_json()["record_count"] == 6


def _edit_result(entry):
    # the same envelope with its keys in another order: not RFC 8785 canonical
    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    return with_file(entry, rec.ENVELOPE_FILE, json.dumps(dict(reversed(list(envelope.items())))).encode())


@pytest.mark.parametrize(
    "tamper",
    ["removed", "swapped", "byte", "after-seal"],
)
def test_streamed_walk_reports_the_same_failures(sealed, trust_file, tamper):
    if tamper == "removed":
        entries = read_branch(sealed)
        del entries[2]
        write_branch(sealed, entries)
    elif tamper == "swapped":
        entries = read_branch(sealed)
        entries[2], entries[3] = entries[3], entries[2]
        write_branch(sealed, entries)
    elif tamper == "byte":
        edit(sealed, 3, _edit_result)
    else:
        entries = read_branch(sealed)
        entries[4], entries[5] = entries[5], entries[4]  # the seal, then a record after it
        write_branch(sealed, entries)
    reports = [
        _check(sealed, trust_file, jobs=jobs, keep_records=keep) for jobs in (1, 2) for keep in (True, False)
    ]
    first = reports[0]
    assert not first.ok
    for other in reports[1:]:
        # same failures in the same order, in and out of process, with or without records
        assert other.failures == first.failures
        assert other.record_count == first.record_count
        assert other.sealed == first.sealed
    checks = {(f.sequence, f.check) for f in first.failures}
    expected = {
        "removed": {(3, "chain"), (5, "seal")},
        "swapped": {(2, "chain"), (3, "chain")},
        "byte": {(3, "envelope")},
        "after-seal": {(4, "after-seal")},
    }[tamper]
    assert expected <= checks, checks


def test_check_all_summary_has_the_same_failures(sealed, signer, tsa, trust_file):
    build_deployment(sealed, signer, tsa, deployment="d-43", steps=2)
    edit(sealed, 2, _edit_result)
    policy = load_trust_policy(trust_file)
    full = {r.deployment: r for r in check_all(sealed, policy=policy, jobs=2)}
    summary = {r.deployment: r for r in check_all(sealed, policy=policy, jobs=2, keep_records=False)}
    assert set(full) == set(summary) == {"d-42", "d-43"}
    for name in full:
        assert summary[name].failures == full[name].failures
        assert summary[name].record_count == full[name].record_count
        assert summary[name].records == ()
    assert not summary["d-42"].ok and summary["d-43"].ok


# -- the walk itself, on synthetic facts: what it keeps -----------------------------------
def _chain(n: int) -> list[Slot]:
    return [_slot(i, n) for i in range(n)]


def _slot(i: int, n: int) -> Slot:
    """Record ``i`` of a synthetic ``n``-record chain (its strings made afresh)."""
    kind = rec.KIND_GENESIS if i == 0 else rec.KIND_SEAL if i == n - 1 else rec.KIND_STEP
    facts = RecordFacts(
        i,
        f"records/0000/{i:06d}-s",
        sequence=i,
        step=f"step{i % 3}",
        kind=kind,
        status="ok",
        envelope_sha256=f"{i:064x}",
        prev=f"{i - 1:064x}" if i else None,
        signer="dev",
        timestamps=[(f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00", "tsa")],
        token_files={f"t{i}.tsr": "x"},
        prev_timestamps={f"t{i - 1}.tsr": "x"} if i else None,
    )
    if kind == rec.KIND_SEAL:
        facts.seal_entries = [{"sequence": j, "step": f"step{j % 3}", "sha256": f"{j:064x}"} for j in range(i)]
    return Slot(f"{i:040x}", f"sha256:{i:064x}", facts)


def _walk(slots: list[Slot], *, keep: bool) -> tuple[list[Failure], bool, ChainWalk]:
    failures: list[Failure] = []
    walk = ChainWalk(failures, _Policy(), keep_records=keep)
    for slot in slots:
        walk.add(slot)
    _, sealed = walk.finish()
    return failures, sealed, walk


class _Policy:
    # test double: the only policy field the chain walk reads (the last record's token
    # dates against its finished_at, which these synthetic facts leave unset)
    from datetime import timedelta

    clock_skew = timedelta(seconds=60)


def test_walk_keeps_only_the_previous_records_facts():
    slots = _chain(50)
    refs = [weakref.ref(s.facts) for s in slots]
    failures: list[Failure] = []
    walk = ChainWalk(failures, _Policy(), keep_records=False)
    for i, slot in enumerate(slots):
        walk.add(slot)
        slots[i] = None  # type: ignore[call-overload]  # the caller lets go, as the verifier does
        del slot
        gc.collect()
        alive = [j for j, r in enumerate(refs[: i + 1]) if r() is not None]
        assert alive == [i]  # only the record just added (the next one's predecessor)
    records, sealed = walk.finish()
    assert records == [] and sealed and not failures and walk.count == 50


def test_walk_still_catches_a_broken_link_and_seal_far_down_a_long_chain():
    slots = _chain(3000)
    failures, sealed, _ = _walk(slots, keep=False)
    assert not failures and sealed
    slots = _chain(3000)
    slots[1700].facts.prev = "f" * 64  # type: ignore[union-attr]
    slots[2100].facts.envelope_sha256 = "e" * 64  # type: ignore[union-attr]
    slots[2100].digest_trailer = "sha256:" + "e" * 64
    failures, sealed, _ = _walk(slots, keep=False)
    found = {(f.sequence, f.check) for f in failures}
    assert (1700, "chain") in found  # prev does not name record 1699
    assert (2101, "chain") in found  # record 2101's prev names the old 2100
    assert (2999, "seal") in found  # the seal lists the old digest of 2100
    seal = next(f for f in failures if f.check == "seal")
    assert "first difference at record 2100" in seal.reason


def test_walk_with_and_without_records_reports_alike():
    slots = _chain(200)
    slots[50].facts.sequence = 51  # type: ignore[union-attr]
    a, sealed_a, kept = _walk(slots, keep=True)
    b, sealed_b, counted = _walk(_chain(200)[:50] + slots[50:], keep=False)
    assert a == b and sealed_a == sealed_b
    assert len(kept.records) == 200 and counted.records == [] and counted.count == 200
    assert any(f.check == "chain" and "stands at position 50" in f.reason for f in a)


def test_object_cache_does_not_grow_along_the_branch(repo, signer, tsa, trust_file):
    # 40 records: the in-process walk takes them in runs of 20 and empties libgit2's
    # object cache after each; what it holds at each progress call does not grow
    # (the figure is libgit2's, for the whole process: another Repository object that the
    # garbage collector has not yet freed counts too, so one is collected first and the
    # test asks that no run adds to it, not that it stays at one level)
    build_deployment(repo, signer, tsa, steps=39, sealed=True)
    gc.collect()
    seen: list[int] = []
    report = _check(repo, trust_file, jobs=1, progress=lambda done, total: seen.append(pygit2.settings.cached_memory[0]))
    assert report.ok and report.record_count == 41
    assert len(seen) >= 3
    # without emptying it, it grows by about 2 KiB a commit (40 KiB a run of 20)
    growth = [after - before for before, after in itertools.pairwise(seen)]
    assert max(growth) <= 4096, seen


# -- the main process: the history walk and the seal's digests ----------------------------
def test_history_ids_are_the_history_and_the_walk_empties_the_cache_as_it_goes(repo, signer, tsa, monkeypatch):
    """The walk that lists a branch's commits held every commit object (and libgit2 kept
    every commit read): about 1.5 KiB per record of peak memory in the main process.
    ``history_ids`` gives the same commits as 20 bytes each, and empties libgit2's cache
    every ``HISTORY_CACHE_RUN`` commits (fails with the emptying during the walk removed)."""
    from afdp.evidence.names import branch_ref
    from afdp.evidence.store import EvidenceStore
    from afdp.evidence.store import read as store_read

    build_deployment(repo, signer, tsa, steps=39, sealed=True)
    monkeypatch.setattr(store_read, "HISTORY_CACHE_RUN", 8)
    store = EvidenceStore(repo)
    head = store.head(branch_ref("api", "d-42"))
    assert head is not None
    expected = b"".join(c.id.raw for c in store.history(head))
    from afdp.verify.verifier import split_ids

    assert [o.raw for o in split_ids(expected)] == [c.id.raw for c in store.history(head)]

    cached: list[int] = []

    class CountingRepository(pygit2.Repository):
        # the real repository; only notes libgit2's cached bytes each time it is emptied
        def free(self) -> None:
            cached.append(pygit2.settings.cached_memory[0])
            super().free()

    store.repo = CountingRepository(str(repo))
    head = store.head(branch_ref("api", "d-42"))
    assert head is not None
    gc.collect()
    ids = store.history_ids(head)
    assert ids == expected and len(ids) == 41 * 20
    assert len(cached) >= 41 // 8, "the cache must be emptied during the walk, not only after it"
    # each run of 8 commits adds about 8 commits' worth (~1-2 KiB each), never the whole walk's
    assert max(cached) - min(cached) <= 8 * 4096, cached


def test_the_seal_check_keeps_32_bytes_per_digest_and_compares_as_before():
    from afdp.verify.facts import Digests as _Digests

    digests = _Digests()
    values = [f"{i:064x}" for i in range(5)] + [None, "ABC", "A" * 64, "g" * 64]
    for i, value in enumerate(values):
        digests.append(f"step{i % 2}", value)
    assert len(digests) == len(values)
    assert [digests[i] for i in range(len(values))] == [(f"step{i % 2}", v) for i, v in enumerate(values)]
    assert len(digests._raw) == 32 * len(values)

    # a seal that lists another spelling (upper case) of a record's digest does not list it
    slots = _chain(20)
    slots[10].facts.envelope_sha256 = "ab" * 32
    slots[11].facts.prev = "ab" * 32
    slots[10].digest_trailer = "sha256:" + "ab" * 32
    seal = slots[-1].facts
    seal.seal_entries[10] = {"sequence": 10, "step": "step1", "sha256": "AB" * 32}
    failures, sealed, _ = _walk(slots, keep=False)
    assert [f.reason for f in failures if f.check == "seal"] == [
        "seal covers 19 records but the branch has 19 before it; first difference at record 10"
    ]
    slots_ok = _chain(20)
    slots_ok[10].facts.envelope_sha256 = "ab" * 32
    slots_ok[11].facts.prev = "ab" * 32
    slots_ok[10].digest_trailer = "sha256:" + "ab" * 32
    slots_ok[-1].facts.seal_entries[10] = {"sequence": 10, "step": "step1", "sha256": "ab" * 32}
    failures, sealed, _ = _walk(slots_ok, keep=False)
    assert not failures and sealed
    # a shorter and a longer list still name where they part
    slots = _chain(20)
    del slots[-1].facts.seal_entries[-1]
    failures, _, _ = _walk(slots, keep=False)
    assert "first difference at record 18" in next(f.reason for f in failures if f.check == "seal")


def test_what_the_walk_keeps_per_record_is_a_few_dozen_bytes():
    """Structural, not timed: the memory the walk holds after 1,000 and after 3,000
    records (tracemalloc, Python's own allocations) grows by under 64 bytes a record:
    a shared step name and 32 raw digest bytes (was one tuple and one 64-character
    string, about 180 bytes)."""
    import tracemalloc

    failures: list[Failure] = []
    walk = ChainWalk(failures, _Policy(), keep_records=False)
    tracemalloc.start()
    try:
        # each record's facts made as it arrives (as the workers' results are), and let go
        for i in range(1000):
            walk.add(_slot(i, 3001))
        gc.collect()
        at_1000 = tracemalloc.get_traced_memory()[0]
        for i in range(1000, 3000):
            walk.add(_slot(i, 3001))
        gc.collect()
        at_3000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert walk.count == 3000 and not failures
    assert (at_3000 - at_1000) / 2000 < 64, (at_1000, at_3000)


def test_a_seals_list_crosses_to_the_main_process_compactly_and_reads_the_same():
    """A worker hands the main process the seal's entries as a ``SealList``: the same
    (sequence, step, sha256) values, including odd ones (a sequence beyond 64 bits, a
    digest that is not lowercase hex), in a small fraction of the pickled size."""
    import pickle

    from afdp.verify.facts import SealList

    entries = [{"sequence": i, "step": f"step{i % 7}", "sha256": f"{i:064x}"} for i in range(10_000)]
    entries[3] = {"sequence": 2**70, "step": "odd", "sha256": "AB" * 32}
    entries[4] = {"sequence": -5, "step": "step4", "sha256": "short"}
    compact = SealList(entries)
    assert len(compact) == len(entries)
    assert [compact[i] for i in range(len(entries))] == [(e["sequence"], e["step"], e["sha256"]) for e in entries]
    assert len(pickle.dumps(compact)) < 50 * len(entries)

    def unpickled_size(value: object) -> int:
        # what the main process holds once it has the worker's result (tracemalloc)
        import tracemalloc

        data = pickle.dumps(value)
        tracemalloc.start()
        try:
            loaded = pickle.loads(data)
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del loaded
        return size

    small, large = unpickled_size(compact), unpickled_size(entries)
    assert small < 60 * len(entries) and small * 5 < large, (small, large)
    again = pickle.loads(pickle.dumps(compact))
    assert [again[i] for i in range(len(entries))] == [compact[i] for i in range(len(entries))]


def test_a_seal_compared_through_its_compact_list_reports_as_the_dict_list_did():
    from afdp.verify.facts import SealList

    for change in (None, "digest", "order", "shorter"):
        dicts, compact = _chain(30), _chain(30)
        for slots in (dicts, compact):
            entries = slots[-1].facts.seal_entries
            if change == "digest":
                entries[12] = {**entries[12], "sha256": "f" * 64}
            elif change == "order":
                entries[5], entries[6] = entries[6], entries[5]
            elif change == "shorter":
                del entries[-3:]
        compact[-1].facts.seal_entries = SealList(compact[-1].facts.seal_entries)
        a, sealed_a, _ = _walk(dicts, keep=False)
        b, sealed_b, _ = _walk(compact, keep=False)
        assert a == b and sealed_a == sealed_b
        assert bool([f for f in a if f.check == "seal"]) == (change is not None)
