"""``afdp.evidence.ledger.open_branch``: a branch opened with its genesis record before any step."""

from __future__ import annotations

from pathlib import Path

import pygit2
import pytest
from conftest import add_step

from afdp.errors import TimestampError
from afdp.evidence.ledger import open_branch, read_tail
from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch


def test_open_writes_genesis_once_and_steps_follow(repo: Path, signer, tsa, trust_file: Path) -> None:
    first = open_branch(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url], genesis_metadata={"run": "r1"})
    assert first is not None and first.kind == "genesis" and first.sequence == 0
    again = open_branch(repo, service="api", deployment="d-1", signer=signer, tsa_urls=[tsa.url])
    assert again is None
    store = EvidenceStore(repo)
    assert read_tail(store, store.head(branch_ref("api", "d-1"))).sequence == 0
    written = add_step(repo, signer, tsa, "capture_baseline", {"p99": 1.0}, deployment="d-1")
    assert [w.kind for w in written] == ["step"]  # no second genesis
    report = check_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok and [r.step for r in report.records] == ["genesis", "capture_baseline"]


def test_open_with_no_tsa_answering_writes_nothing(repo: Path, signer) -> None:
    with pytest.raises(TimestampError):
        open_branch(repo, service="api", deployment="d-2", signer=signer, tsa_urls=["http://127.0.0.1:9/"], timeout=2.0)
    assert list(pygit2.Repository(str(repo)).references) == []
