"""What a push to the central evidence remote did, branch by branch, and the verification
gate it may run first: the values :mod:`afdp.evidence.remote` returns and takes.

- :class:`BranchPush`: one branch's outcome (created, pushed, ..., refused), with the
  :class:`Verdict` of the head verified before it was sent, when a gate ran;
- :class:`PushReport`: one remote's branches, its exit code and ``--json`` form;
- :class:`PushGate`: what verifies a head before it is sent
  (:class:`afdp.verify.gate.TrustGate` is the one AFDP ships).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from afdp.errors import EXIT_FAILED, EXIT_OK, EXIT_OPERATIONAL

__all__ = ["SETTLED", "BranchPush", "PushGate", "PushReport", "Verdict"]

#: Outcomes after which the remote holds the local branch's records (or more of the
#: same chain): nothing is left to send.
SETTLED = ("created", "pushed", "up-to-date", "behind")


@dataclass(frozen=True)
class Verdict:
    """What verification said about one branch head before a push acted on it."""

    head: str
    state: str  # verified | unsealed | failed
    trust_policy: str
    #: the first failed check (``where``, ``check``, ``reason``), and how many failed
    first_failure: dict[str, str] | None = None
    failure_count: int = 0

    @property
    def ok(self) -> bool:
        return self.state != "failed"

    def describe(self) -> str:
        """One line: the first failing record and check, and how many more failed."""
        if self.first_failure is None:
            return self.state
        first = self.first_failure
        more = f" (and {self.failure_count - 1} more)" if self.failure_count > 1 else ""
        return f"{first['where']}: {first['check']}: {first['reason']}{more}"


class PushGate(Protocol):
    """Verifies a branch head before a push sends it (or acts on the remote's)."""

    @property
    def source(self) -> str:
        """The trust policy it verifies against (its file)."""

    def __call__(self, git_dir: Path, ref: str, head: str) -> Verdict:
        """Verify the chain that ends at commit ``head`` as branch ``ref`` of the
        repository at ``git_dir`` (its objects are read, nothing is changed)."""


@dataclass(frozen=True)
class BranchPush:
    """What pushing one branch did."""

    ref: str
    # created | pushed | up-to-date | behind | diverged | rejected | invalid
    # | refused (fails verification: not pushed) | remote-failed (the remote's branch,
    # ahead on the same chain, fails verification)
    outcome: str
    local: str | None
    remote_before: str | None
    remote_after: str | None
    detail: str
    attempts: int = 1
    #: diverged only: the last commit both chains share, and how many commits each side
    #: has after it
    common_ancestor: str | None = None
    local_only: int | None = None
    remote_only: int | None = None
    #: unchecked (no gate, or nothing was sent), else the :class:`Verdict` of the head
    #: that was sent (or refused), or of the remote's head for ``remote-failed`` and a
    #: ``behind`` branch
    verification: str = "unchecked"
    verified_head: str | None = None
    failure: dict[str, str] | None = None
    failure_count: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in SETTLED

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def with_verdict(self, verdict: Verdict | None) -> BranchPush:
        if verdict is None:
            return self
        return replace(
            self,
            verification=verdict.state,
            verified_head=verdict.head,
            failure=verdict.first_failure,
            failure_count=verdict.failure_count,
        )


@dataclass(frozen=True)
class PushReport:
    """The outcome of one push to one remote: one :class:`BranchPush` per branch."""

    remote: str  # redacted
    branches: tuple[BranchPush, ...]
    #: the policy every branch was verified against before it was sent (None: unchecked)
    trust_policy: str | None = None

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.branches)

    @property
    def refused(self) -> tuple[BranchPush, ...]:
        """The branches not pushed because they (or the remote's) failed verification."""
        return tuple(b for b in self.branches if b.outcome in ("refused", "remote-failed"))

    @property
    def exit_code(self) -> int:
        """0 every branch settled; 1 a branch failed verification, diverged or is not an
        AFDP name; 3 the remote refused an update."""
        if self.ok:
            return EXIT_OK
        if any(b.outcome == "rejected" for b in self.branches):
            return EXIT_OPERATIONAL
        return EXIT_FAILED

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "remote": self.remote,
            "trust_policy": self.trust_policy,
            "branches": [b.to_json() for b in self.branches],
            "refused": [
                {"ref": b.ref, "outcome": b.outcome, "head": b.verified_head, "failure": b.failure, "failure_count": b.failure_count}
                for b in self.refused
            ],
        }
