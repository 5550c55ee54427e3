"""Writers of one branch take turns: N records cost N signatures and N time-stamps.

Real parts: separate writer processes (the way CI jobs or ``afdp record`` calls race),
the embedded TSA over loopback HTTP counting the requests it answers, a real Git
repository, and ``check_branch`` on the result. Before the turns, every lost
compare-and-swap re-signed and re-stamped (8 writers wasted thousands of stamps).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from afdp.errors import StorageError
from afdp.evidence.names import branch_ref
from afdp.evidence.notary import EmbeddedTSA, serve
from afdp.evidence.store import EvidenceStore
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent(
    """
    import sys
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record
    from afdp.evidence.signing import load_signer
    repo, key, url, name, count = sys.argv[1:6]
    signer = load_signer(key)
    for i in range(int(count)):
        draft = rec.RecordDraft(kind=rec.KIND_STEP, step=f"{name}-{i}", result={"writer": name, "i": i})
        append_record(repo, service="api", deployment="race", draft=draft, signer=signer, tsa_urls=[url])
    """
)


class CountingTSA(EmbeddedTSA):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.answered = 0
        self._count_lock = threading.Lock()

    def respond(self, request_der: bytes) -> bytes:
        with self._count_lock:
            self.answered += 1
        return super().respond(request_der)


@pytest.fixture()
def counting_tsa(tsa) -> Iterator[tuple[CountingTSA, str]]:  # type: ignore[no-untyped-def]
    counting = CountingTSA.load(tsa.directory)
    assert isinstance(counting, CountingTSA)
    with serve(counting, host="127.0.0.1", port=0) as server:
        yield counting, server.url


def _writer(repo: Path, key: Path, url: str, name: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(repo), str(key), url, name, str(count)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_writers_spend_one_stamp_per_record(repo, keys, counting_tsa, trust_file) -> None:
    tsa, url = counting_tsa
    writers, each = 6, 5
    procs = [_writer(repo, keys / "dev.key", url, f"w{n}", each) for n in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    report = check_branch(repo, service="api", deployment="race", policy=load_trust_policy(trust_file), allow_unsealed=True)
    assert report.ok, report.failures[:3]
    records = writers * each + 1  # the genesis record too
    assert len(report.records) == records
    # One time-stamp per record: no writer re-stamped after losing a race.
    assert tsa.answered == records


def test_a_writer_that_dies_in_its_turn_does_not_block_the_branch(repo) -> None:
    # The turn is an flock: the kernel releases it when its holder is killed.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from afdp.evidence.store import EvidenceStore\n"
            "store = EvidenceStore(sys.argv[1])\n"
            "with store.branch_turn(sys.argv[2]):\n"
            "    print('holding', flush=True)\n"
            "    time.sleep(600)\n",
            str(repo),
            branch_ref("api", "race"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        store = EvidenceStore(repo)
        with pytest.raises(StorageError, match="held its turn"), store.branch_turn(branch_ref("api", "race"), wait=0.3):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        started = time.monotonic()
        with store.branch_turn(branch_ref("api", "race"), wait=10):
            pass
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_turns_are_per_branch(repo) -> None:
    store = EvidenceStore(repo)
    # Another branch of the same repository is not held up by this turn.
    with store.branch_turn(branch_ref("api", "one"), wait=1), store.branch_turn(branch_ref("api", "two"), wait=0.2):
        pass
