"""Verification shortcuts taken for speed still fail on tampered input.

- envelope.json is canonicalized once per record: the re-encoding of its payload, keyid
  and signature stands for the canonical-form check when it matches, and both failures
  are still named when it does not;
- records may be checked by worker processes (``--jobs``, long branches): a tampered
  record is named the same way in and out of process.
"""

from __future__ import annotations

import json

import pytest
from conftest import build_deployment
from tamper import edit, read_branch, with_file, write_branch

from afdp.evidence import records as rec
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch


def failures(report) -> set[tuple[int | None, str, str]]:
    return {(f.sequence, f.check, f.reason) for f in report.failures}


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=3)
    return repo


def _reorder(entry):
    # the same JSON with its keys in another order: not RFC 8785 canonical
    envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
    return with_file(entry, rec.ENVELOPE_FILE, json.dumps(dict(reversed(list(envelope.items()))), separators=(",", ":")).encode())


def test_non_canonical_envelope_still_named_both_ways(sealed, trust_file):
    edit(sealed, 2, _reorder)
    report = check_branch(sealed, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    found = {(s, c, r.split(" (")[0]) for s, c, r in failures(report)}
    assert (2, "envelope", "envelope.json is not in RFC 8785 canonical form") in found
    assert any(s == 2 and c == "envelope" and r.startswith("envelope.json differs from the canonical re-encoding") for s, c, r in failures(report))


@pytest.mark.parametrize("jobs", [1, 2])
def test_tampered_record_named_alike_in_and_out_of_process(sealed, trust_file, jobs):
    edit(sealed, 2, _reorder)
    report = check_branch(sealed, service="api", deployment="d-42", policy=load_trust_policy(trust_file), jobs=jobs)
    assert not report.ok
    assert {(s, c) for s, c, _ in failures(report)} >= {(2, "envelope")}
    reference = check_branch(sealed, service="api", deployment="d-42", policy=load_trust_policy(trust_file), jobs=1)
    assert failures(report) == failures(reference)


@pytest.mark.parametrize("position", [0, 1])
def test_the_record_checked_before_the_workers_start_is_named_alike(sealed, trust_file, position):
    """With workers, the first record is checked in the main process before the fork
    (the workers inherit what it warmed) and the rest by the workers: a tampered record
    on either side of that split, and a token swapped across it, fail exactly as in one
    process, in the same order."""
    edit(sealed, position, _reorder)
    entries = read_branch(sealed)
    entries[2] = with_file(entries[2], "timestamp-0.tsr", entries[0].files["timestamp-0.tsr"])
    write_branch(sealed, entries)
    policy = load_trust_policy(trust_file)
    parallel = check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=2)
    serial = check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=1)
    assert {(s, c) for s, c, _ in failures(parallel)} >= {(position, "envelope"), (2, "timestamp.imprint")}
    assert parallel.failures == serial.failures
    assert parallel.records == serial.records


def test_reading_a_run_ahead_of_its_checks_finds_what_one_at_a_time_finds(sealed, trust_file, monkeypatch):
    """A run of commits is read ahead of its checks, and its records are checked stage by
    stage across the run (``check_records``); with the read-ahead bound at one byte, every
    commit is read and its record checked alone, as before. Records that stop at the
    first stage (no envelope), at the second (not JSON), fail a later one (a token of
    another record) or go on after a failure (not canonical) report the same either way,
    every failure in the same order."""
    from dataclasses import replace

    from afdp.verify import verifier

    entries = read_branch(sealed)
    entries[1] = with_file(entries[1], rec.ENVELOPE_FILE, b"not JSON")
    entries[2] = replace(entries[2], files={k: v for k, v in entries[2].files.items() if k != rec.ENVELOPE_FILE})
    entries[3] = with_file(entries[3], "timestamp-0.tsr", entries[0].files["timestamp-0.tsr"])
    entries[4] = _reorder(entries[4])
    write_branch(sealed, entries)
    policy = load_trust_policy(trust_file)
    ahead = check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=1)
    monkeypatch.setattr(verifier, "READ_AHEAD_BYTES", 1)
    one_by_one = check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=1)
    found = {(s, c) for s, c, _ in failures(ahead)}
    assert found >= {(3, "timestamp.imprint"), (4, "envelope")}, found
    assert any(c == "envelope" and "is not JSON" in r for _, c, r in failures(ahead))  # record 1
    assert any(c == "layout" and "no envelope.json" in r for _, c, r in failures(ahead))  # record 2
    assert ahead.failures == one_by_one.failures
    assert ahead.records == one_by_one.records


def test_reading_ahead_stops_at_its_bound(sealed, trust_file, monkeypatch):
    """Two neighbouring records that each carry a 6 MiB file are not held together:
    reading ahead stops for the checks once READ_AHEAD_BYTES (1 MiB) is held, so the
    peak is one large record's (6 MiB), not both records' (12 MiB, as with no bound)."""
    import tracemalloc

    from afdp.verify import verifier

    for index in (1, 2):
        edit(sealed, index, lambda entry, name=f"extra-{index}.bin": with_file(entry, name, b"\x00" * (6 << 20)))
    policy = load_trust_policy(trust_file)
    check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=1)  # imports, caches

    def peak() -> int:
        tracemalloc.start()
        try:
            report = check_branch(sealed, service="api", deployment="d-42", policy=policy, jobs=1)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert {(s, c) for s, c, _ in failures(report)} >= {(1, "layout"), (2, "layout")}
        return top

    bounded = peak()
    monkeypatch.setattr(verifier, "READ_AHEAD_BYTES", 1 << 40)
    unbounded = peak()
    assert bounded < 9 << 20, f"peak {bounded >> 20} MiB"
    assert unbounded > bounded + (4 << 20), (unbounded >> 20, bounded >> 20)
