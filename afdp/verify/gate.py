"""The push gate: evidence is verified, against the auditor's trust policy, before it is
pushed to the central remote (``afdp push --trust``, ``afdp run --trust --push``).

:class:`TrustGate` is the :class:`afdp.evidence.pushreport.PushGate` that
:func:`afdp.evidence.remote.push_branches` calls for every head it would send (and for
the remote's head where the remote is ahead on the same chain). It runs the same checks
as ``afdp verify`` (:func:`afdp.verify.verifier.check_branch`), offline, with one
difference: a branch with no seal yet passes as ``unsealed`` (a deployment in progress
is pushed phase by phase; records after a seal still fail).

The head is verified exactly as it would be sent, whatever the branch's ref does
meanwhile: a scratch repository borrows the evidence repository's objects (git's
``objects/info/alternates``, nothing copied or written to the evidence repository) and
names the head under the branch's ref; check 0 reports what it found in the evidence
repository itself (``refs/replace``, ``refs/notes``, grafts, shallow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType

import pygit2

from afdp.errors import UsageError
from afdp.evidence.names import parse_branch_ref
from afdp.evidence.pushreport import Verdict
from afdp.evidence.store import EvidenceStore, common_dir
from afdp.evidence.trust import TrustPolicy


class TrustGate:
    """Verify branch heads against ``policy`` before they are pushed; a context manager
    (the scratch repositories live until it exits)."""

    def __init__(self, policy: TrustPolicy, *, jobs: int | None = None) -> None:
        self.policy = policy
        self.jobs = jobs
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._mirrors: dict[Path, tuple[Path, list[str]]] = {}

    @property
    def source(self) -> str:
        return self.policy.source

    def __enter__(self) -> TrustGate:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Delete the scratch repositories."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
            self._mirrors.clear()

    def __call__(self, git_dir: Path, ref: str, head: str) -> Verdict:
        """Verify the chain ending at commit ``head`` as branch ``ref`` of ``git_dir``.

        Returns:
            the :class:`Verdict`: verified (sealed, every check passed), unsealed (every
            check passed, no seal yet) or failed (the first failing record and check).

        Raises:
            UsageError: ``ref`` is not an AFDP branch.
        """
        from afdp.verify.verifier import check_branch

        named = parse_branch_ref(ref)
        if named is None:
            raise UsageError(f"{ref!r} is not an AFDP evidence branch (refs/heads/afdp/<service>/<deployment>)")
        mirror, substitutions = self._mirror(git_dir)
        pygit2.Repository(str(mirror)).references.create(ref, pygit2.Oid(hex=head), force=True)
        report = check_branch(
            mirror,
            service=named[0],
            deployment=named[1],
            policy=self.policy,
            allow_unsealed=True,
            jobs=self.jobs,
            substitutions=substitutions,
            keep_records=False,
        )
        first = None
        if report.failures:
            failure = report.failures[0]
            # a reason that names the scratch repository names the evidence repository
            first = {
                "where": failure.where,
                "check": failure.check,
                "reason": failure.reason.replace(str(mirror), str(git_dir)),
            }
        return Verdict(head, report.state, self.policy.source, first, len(report.failures))

    def _mirror(self, git_dir: Path) -> tuple[Path, list[str]]:
        """A bare repository that reads ``git_dir``'s objects, and ``git_dir``'s check 0."""
        key = git_dir.resolve()
        if key not in self._mirrors:
            if self._scratch is None:
                self._scratch = tempfile.TemporaryDirectory(prefix="afdp-push-verify-")
            path = Path(self._scratch.name) / f"{len(self._mirrors)}.git"
            pygit2.init_repository(str(path), bare=True)
            (path / "objects" / "info").mkdir(parents=True, exist_ok=True)
            (path / "objects" / "info" / "alternates").write_text(f"{common_dir(key) / 'objects'}\n", encoding="utf-8")
            self._mirrors[key] = (path, EvidenceStore(key).substitutions())
        return self._mirrors[key]
