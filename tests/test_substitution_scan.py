"""A repository-wide substitution (``git replace``, notes, grafts, shallow) fails every
branch of a many-branch check, although the scan is now done once per call.

Why once: the scan lists every ref, so scanning it again for each branch made checking N
branches cost N² ref reads (10,000 deployments took 24 minutes to export). The one scan
must still reach every branch's verdict, in-process and in worker processes, for
``afdp verify --all``, ``load_history`` (datasets, predictions), reports and ``find``.
"""

from __future__ import annotations

import pygit2
import pytest

from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.learn.history import load_history
from afdp.verify.verifier import check_all
from tests.conftest import build_deployment
from tests.test_learn_dataset import ledger_deployment


@pytest.fixture()
def three(repo, signer, tsa):
    for n in range(3):
        build_deployment(repo, signer, tsa, deployment=f"d-{n}")
    return repo


def _replace_one_blob(repo) -> str:
    git = pygit2.Repository(str(repo))
    commit = git.revparse_single("refs/heads/afdp/api/d-1")
    name = f"refs/replace/{commit.tree.id}"  # git would show another tree for this commit
    git.references.create(name, git.create_blob(b'{"forged":"no regression"}'))
    return name


def _counting_scans(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = EvidenceStore.substitutions

    def counted(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(EvidenceStore, "substitutions", counted)
    return calls


@pytest.mark.parametrize("jobs", [1, 2])
def test_verify_all_fails_every_branch_on_a_replace_ref(three, trust_file, jobs, monkeypatch):
    policy = load_trust_policy(trust_file, evidence_repository=three)
    assert all(r.ok for r in check_all(three, policy=policy, jobs=jobs))
    name = _replace_one_blob(three)
    calls = _counting_scans(monkeypatch)
    reports = check_all(three, policy=policy, jobs=jobs)
    assert len(reports) == 3
    for report in reports:  # every branch, not only the one whose object was replaced
        assert not report.ok
        assert any(f.check == "repository" and name in f.reason for f in report.failures)
    if jobs == 1:
        assert len(calls) == 1  # one scan for the whole call (workers run in other processes)


def test_load_history_excludes_every_branch_on_a_replace_ref(repo, signer, tsa, trust_file, monkeypatch):
    for n in range(3):
        ledger_deployment(repo, signer, tsa.url, "api", f"d-{n}", deployed_at=f"2026-11-0{n + 1}T10:00:00Z")
    assert len(load_history(repo, trust_file, jobs=1).rows) == 3
    _replace_one_blob(repo)
    calls = _counting_scans(monkeypatch)
    history = load_history(repo, trust_file, jobs=1)
    assert history.rows == []
    assert len(history.excluded) == 3
    assert all("repository" in e.reason for e in history.excluded)
    assert len(calls) == 1


def test_notes_ref_fails_every_branch_in_parallel(three, trust_file):
    git = pygit2.Repository(str(three))
    head = git.revparse_single("refs/heads/afdp/api/d-2")
    sig = pygit2.Signature("x", "x@example.com")
    git.create_note("looks fine to me", sig, sig, str(head.id))
    policy = load_trust_policy(trust_file, evidence_repository=three)
    reports = check_all(three, policy=policy, jobs=2)
    assert reports and all(not r.ok for r in reports)
    assert all(any(f.check == "repository" and "refs/notes/" in f.reason for f in r.failures) for r in reports)
