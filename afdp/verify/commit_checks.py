"""The checks of the commit that carries a record (``afdp.verify.checks`` 10 and 11):
its SSH signature by the record's trusted key, its message (exactly the one AFDP writes
for the verified record; the AFDP-TSA URL only well-formed) and its author.

Each takes the record's :class:`~afdp.verify.facts.RecordInput` and records failures in
its :class:`~afdp.verify.facts.RecordFacts`; :func:`afdp.verify.checks.check_record`
runs them in order.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from afdp.evidence import records as rec
from afdp.verify.facts import RecordFacts, RecordInput

__all__ = ["check_author", "check_commit_signature", "check_message", "well_formed_url"]


def well_formed_url(url: str) -> bool:
    """Return True for an http(s) URL with a host and no spaces or control characters."""
    if not url or len(url) > 2048 or _URL_FORBIDDEN.search(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# Not re.ASCII on purpose: \s must also refuse Unicode spaces in a URL.
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_TSA_LINE = re.compile(r"^AFDP-TSA: (.*)$", re.MULTILINE | re.ASCII)


def check_message(item: RecordInput, statement: dict[str, Any], label: str, facts: RecordFacts) -> None:
    from afdp.evidence.ledger import commit_message

    actual = item.commit_message
    if actual is None:
        return
    gen_time = facts.token_times.get("timestamp-0.tsr")
    if gen_time is None or facts.envelope_sha256 is None:
        # Fail closed: without a valid first token the message cannot be regenerated.
        # Unless that very token's failure is already recorded (then the record fails
        # for it), the unchecked message is a failure of its own.
        if not any(reason.startswith("timestamp-0.tsr: ") for _, reason in facts.failures):
            facts.fail(
                "commit",
                "the commit message cannot be checked: the record has no valid timestamp-0.tsr to regenerate it from",
            )
        return
    found = _TSA_LINE.findall(actual)
    url = found[0] if len(found) == 1 else ""
    facts.tsa_url = url or None
    if not well_formed_url(url):
        facts.fail("commit", f"the AFDP-TSA trailer {url[:100]!r} is not one http(s) URL")
    expected = commit_message(statement, facts.envelope_sha256, label, url, rec.format_time(gen_time))
    if actual != expected:
        got, want = actual.split("\n"), expected.split("\n")
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        shown = got[at][:120] if at < len(got) else "(end of message)"
        wanted = want[at][:120] if at < len(want) else "(end of message)"
        facts.fail(
            "commit",
            f"commit message is not the one AFDP writes for this record: line {at + 1} reads {shown!r}, expected {wanted!r}",
        )


def check_author(item: RecordInput, predicate: dict[str, Any], facts: RecordFacts) -> None:
    # The commit's author is AFDP's unless the signed record names another one
    # (context.git_author, written by the ledger for --author). A commit with a Git
    # signature (check 10) is bound by it: an author the record does not name is then
    # accepted only if the record names none (evidence written before the record did).
    from afdp.evidence.ledger import GIT_AUTHOR_KEY, git_identity
    from afdp.evidence.store import COMMITTER

    if item.commit_author is None:
        return  # malformed author header: already a "commit" problem of the commit
    context = predicate.get("context")
    named = context.get(GIT_AUTHOR_KEY) if isinstance(context, dict) else None
    if named is None and item.commit_signature is not None:
        return
    expected = named if named is not None else git_identity(COMMITTER)
    if item.commit_author != expected:
        facts.fail(
            "commit",
            f"commit author {item.commit_author[:120]!r} is not the one the signed record names ({str(expected)[:120]!r})",
        )


def check_commit_signature(item: RecordInput, key: Any, facts: RecordFacts) -> None:
    from afdp.evidence.sshsig import CommitSignatureError, ssh_capable, verify_git_commit

    if key is None:
        # No trusted key (keyless record, or check 6 failed): nothing to check a commit
        # signature against. One that is present anyway cannot be verified: fail closed.
        if item.commit_signature is not None and facts.signer is not None:
            facts.fail("commit-signature", "commit carries a signature, but the record's signer has no key to check it with")
        return
    if not ssh_capable(key):
        if item.commit_signature is not None:
            facts.fail("commit-signature", f"commit carries a signature, but key scheme {key.scheme} cannot make SSH signatures")
        return
    if item.commit_signature is None or item.commit_payload is None:
        facts.fail("commit-signature", "commit is not signed (git gpgsig header missing)")
        return
    try:
        verify_git_commit(item.commit_signature, item.commit_payload, key)
    except CommitSignatureError as exc:
        facts.fail("commit-signature", str(exc))
