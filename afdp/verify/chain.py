"""The chain checks (11-15) over the per-record results in order: commit shape and message, ``prev`` links and time-stamp references, time order, the seal, nothing after the seal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, overload

from afdp.evidence import records as rec
from afdp.evidence.trust import TrustPolicy
from afdp.verify.checks import RecordFacts
from afdp.verify.facts import Digests, SealList
from afdp.verify.report import Failure, VerifiedRecord

TIME_ORDER_TOLERANCE = timedelta(seconds=1)


# -- main side -----------------------------------------------------------------------------
@dataclass
class Slot:
    """A record-bearing commit awaiting its per-record results."""

    commit: str
    digest_trailer: str | None
    facts: RecordFacts | None = None
    unreadable: bool = False  # an object is missing or corrupt: already a commit failure


_IN_RECORD = re.compile(r"records/[0-9]+/([0-9]{6,})-([A-Za-z0-9._-]+)/(.+)")


def problem(where: str, check: str, reason: str, commit: str) -> Failure:
    """A tree problem, named after the record it lies in when it lies in one."""
    match = _IN_RECORD.match(reason)
    if match and check == "layout":
        sequence, step, rest = int(match.group(1)), match.group(2), match.group(3)
        return Failure(f"record {sequence} ({step})", check, rest, sequence, commit)
    return Failure(where, check, reason, commit=commit)


def _label(facts: RecordFacts) -> str:
    name = facts.step or facts.directory.rsplit("/", 1)[-1]
    number = facts.sequence if facts.sequence is not None else facts.position
    return f"record {number} ({name})"


def chain_checks(
    slots: list[Slot], failures: list[Failure], policy: TrustPolicy
) -> tuple[list[VerifiedRecord], bool]:
    """Run the chain checks over every slot in order (see :class:`ChainWalk`)."""
    walk = ChainWalk(failures, policy)
    for slot in slots:
        walk.add(slot)
    return walk.finish()


class ChainWalk:
    """The chain checks (12-15), fed one record at a time in the branch's order.

    What a record is checked against is only its predecessor's facts (``prev``, the
    time-stamp tokens it cites, time order), the genesis record's import marker and, for
    the seal, the (step, envelope digest) of every record before it: a walk holds those,
    not every record's facts, so its memory does not grow with the branch beyond that one
    short pair per record. Failures are appended to ``failures`` in the same order as
    checking the whole list at once. With ``keep_records`` False no
    :class:`VerifiedRecord` is kept: :meth:`finish` returns none, and :attr:`count`,
    :attr:`signers` and :attr:`described_time` say what a summary needs.
    """

    def __init__(self, failures: list[Failure], policy: TrustPolicy, *, keep_records: bool = True) -> None:
        self.failures = failures
        self.policy = policy
        self.keep_records = keep_records
        self.records: list[VerifiedRecord] = []
        self.count = 0
        self.signers: set[str] = set()
        self.described_time: str | None = None  # of the first record
        self._previous: Slot | None = None
        self._previous_time: datetime | None = None
        self._seal_at: int | None = None
        self._genesis_marker: tuple[str | None] | None = None
        #: (step, envelope digest) of every record so far, for the seal, stored compactly:
        #: the step names (shared strings: 8 bytes a record) and the digests' 32 raw bytes
        #: end to end (a hex string and its tuple were about 180 bytes a record)
        self._before = Digests()
        self._unknown: set[int] = set()  # unreadable records among them
        self._names: dict[str, str] = {}

    def add(self, slot: Slot) -> None:
        """Run the chain checks of the next record (``slot.facts`` filled)."""
        facts = slot.facts
        assert facts is not None  # every slot was checked
        failures = self.failures
        position = self.count
        previous_slot = self._previous
        previous = previous_slot.facts if previous_slot is not None else None
        where = _label(facts)
        # A record whose objects could not be read (a commit failure names them) and
        # whose envelope is therefore absent: "no envelope.json" would be a follow-on.
        # Its neighbours' chain and seal checks likewise skip what cannot be known.
        hidden = slot.unreadable and facts.envelope_sha256 is None
        for check, reason in facts.failures:
            if not hidden:
                failures.append(Failure(where, check, reason, facts.sequence, slot.commit))
        previous_unknown = (
            previous_slot is not None
            and previous_slot.unreadable
            and (previous is None or previous.envelope_sha256 is None)
        )
        if facts.envelope_sha256 and slot.digest_trailer != f"sha256:{facts.envelope_sha256}":
            failures.append(
                Failure(
                    where,
                    "commit",
                    "commit's AFDP-Digest trailer does not name this record",
                    facts.sequence,
                    slot.commit,
                )
            )
        # 12. chain
        if facts.sequence is not None and facts.sequence != position:
            failures.append(
                Failure(
                    where,
                    "chain",
                    f"record {facts.sequence} stands at position {position}: records are missing, added or out of order",
                    facts.sequence,
                    slot.commit,
                )
            )
        if position == 0 and facts.kind not in (None, rec.KIND_GENESIS):
            failures.append(
                Failure(
                    where,
                    "chain",
                    "the branch does not start with a genesis record",
                    facts.sequence,
                    slot.commit,
                )
            )
        if position > 0 and facts.kind is not None and previous is not None and not previous_unknown:
            cited = facts.prev_timestamps or {}
            held = previous.token_files
            if cited != held:
                extra = sorted(held.keys() - cited.keys())
                missing = sorted(cited.keys() - held.keys())
                swapped = sorted(n for n in held.keys() & cited.keys() if held[n] != cited[n])
                parts = [
                    f"{label} {', '.join(names)}"
                    for label, names in (
                        ("not cited by the next record:", extra),
                        ("cited but missing:", missing),
                        ("differ from the digest the next record cites:", swapped),
                    )
                    if names
                ]
                assert previous_slot is not None
                failures.append(
                    Failure(
                        _label(previous),
                        "chain",
                        f"time-stamp tokens {'; '.join(parts)} (record {facts.sequence} binds this record's tokens)",
                        previous.sequence,
                        previous_slot.commit,
                    )
                )
        if position > 0 and facts.kind is not None and not previous_unknown:
            expected = previous.envelope_sha256 if previous else None
            if facts.prev != expected:
                failures.append(
                    Failure(
                        where,
                        "chain",
                        f"prev cites {str(facts.prev)[:16]}…, but the record before it is {str(expected)[:16]}…",
                        facts.sequence,
                        slot.commit,
                    )
                )
        # 12i. imported: one branch tells one story, imported or live, and of one time
        if facts.kind is not None and not hidden:
            if self._genesis_marker is None:
                self._genesis_marker = (facts.described_time,)
            elif (facts.described_time,) != self._genesis_marker:
                said = self._genesis_marker[0]
                failures.append(
                    Failure(
                        where,
                        "imported",
                        (
                            f"record is imported (describes {facts.described_time})"
                            if facts.described_time
                            else "record is not marked imported"
                        )
                        + ", but the branch's genesis "
                        + (f"is imported (describes {said})" if said else "is a live-captured record"),
                        facts.sequence,
                        slot.commit,
                    )
                )
        # 13. time-order
        if facts.timestamps:
            stamped = min(datetime.fromisoformat(t) for t, _ in facts.timestamps)
            previous_time = self._previous_time
            if previous_time is not None and stamped + TIME_ORDER_TOLERANCE < previous_time:
                failures.append(
                    Failure(
                        where,
                        "time-order",
                        f"time-stamped {stamped.isoformat()}, before the record preceding it ({previous_time.isoformat()})",
                        facts.sequence,
                        slot.commit,
                    )
                )
            self._previous_time = max(stamped, previous_time) if previous_time else stamped
        # 15. after-seal
        if self._seal_at is not None:
            failures.append(
                Failure(
                    where,
                    "after-seal",
                    f"record follows the seal (record {self._seal_at})",
                    facts.sequence,
                    slot.commit,
                )
            )
        if facts.kind == rec.KIND_SEAL and self._seal_at is None:
            self._seal_at = position
            _check_seal(self._before, self._unknown, facts, where, slot.commit, failures)
        self._before.append(self._share(facts.step), facts.envelope_sha256)
        if hidden:
            self._unknown.add(position)
        if position == 0:
            self.described_time = facts.described_time
        if facts.signer:
            self.signers.add(self._share(facts.signer))
        if self.keep_records:
            # the values most records repeat (step, kind, signer, key, TSA) are shared
            share = self._share
            self.records.append(
                VerifiedRecord(
                    facts.sequence if facts.sequence is not None else position,
                    share(facts.step) or "?",
                    share(facts.kind) or "?",
                    share(facts.status) or "?",
                    facts.summary or "",
                    facts.envelope_sha256 or "",
                    share(facts.signer),
                    share(facts.keyid),
                    tuple((at, share(name)) for at, name in facts.timestamps),
                    facts.started_at,
                    facts.finished_at,
                    slot.commit,
                    share(facts.tsa_url),
                    described_time=share(facts.described_time),
                )
            )
        # only this record's facts are kept, as the next one's predecessor
        self._previous = slot
        self.count += 1

    @overload
    def _share(self, value: str) -> str: ...
    @overload
    def _share(self, value: None) -> None: ...
    @overload
    def _share(self, value: str | None) -> str | None: ...
    def _share(self, value: str | None) -> str | None:
        return None if value is None else self._names.setdefault(value, value)

    def finish(self) -> tuple[list[VerifiedRecord], bool]:
        """Check the last record's tokens; return the records kept and whether the branch is sealed."""
        last = self._previous
        if last is not None and last.facts is not None:
            _check_last_tokens(last.facts, last.commit, self.failures, self.policy)
        return self.records, self._seal_at is not None and self._seal_at == self.count - 1


def _check_last_tokens(
    facts: RecordFacts, commit: str, failures: list[Failure], policy: TrustPolicy
) -> None:
    # 9. time, for the last record only: no later record binds its time-stamp tokens
    # (12. chain does for every other record), so a token could be added or swapped
    # later. The writer asks for its token right after signing, so a token dated more
    # than the clock skew after the record's signed finished_at is refused.
    if facts.finished_at is None:
        return
    try:
        finished = rec.parse_time(facts.finished_at)
    except ValueError:
        return  # already a schema failure
    for name, stamped in sorted(facts.token_times.items()):
        if stamped > finished + policy.clock_skew:
            failures.append(
                Failure(
                    _label(facts),
                    "time",
                    f"{name} is dated {stamped.isoformat()}, more than {int(policy.clock_skew.total_seconds())} s "
                    f"after the record finished ({facts.finished_at}); the last record's tokens are bound "
                    "by no later record, so a later token is refused",
                    facts.sequence,
                    commit,
                )
            )


def _check_seal(
    before: Digests,
    unknown: set[int],
    seal: RecordFacts,
    where: str,
    commit: str,
    failures: list[Failure],
) -> None:
    # 14. seal: exactly the records before it, in order, by envelope digest
    entries = seal.seal_entries
    if entries is None:
        failures.append(Failure(where, "seal", "seal lists no records", seal.sequence, commit))
        return
    # compared one record at a time: no second list of every record is built
    count = len(before)
    # an unreadable record (already a commit failure) cannot be compared: take the
    # seal's word for it rather than report a follow-on difference
    trust_listed = bool(unknown) and len(entries) == count
    mismatch = None
    for index in range(min(len(entries), count)):
        listed: tuple[Any, Any, Any]
        if isinstance(entries, SealList):
            listed = entries[index]
        else:
            entry = entries[index]
            listed = (
                (entry.get("sequence"), entry.get("step"), entry.get("sha256")) if isinstance(entry, dict) else (None, None, None)
            )
        if trust_listed and index in unknown:
            continue
        if listed != (index, *before[index]):
            mismatch = index
            break
    if mismatch is None and len(entries) != count:
        mismatch = min(len(entries), count)
    if mismatch is not None:
        failures.append(
            Failure(
                where,
                "seal",
                f"seal covers {len(entries)} records but the branch has {count} before it; first difference at record {mismatch}",
                seal.sequence,
                commit,
            )
        )
