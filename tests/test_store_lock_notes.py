"""The note in AFDP's ref-writer lock file (``afdp-locks/refs/<hash>.lock``) is written
over in place and blanked on a clean exit: what a holder that died left is read in
full, never mixed with a shorter note written after it, and a clean exit leaves no note.
Real repository, real ``flock``; the dead holder's note is written as one would be.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from conftest import add_step

from afdp.evidence.names import branch_ref
from afdp.evidence.store import EvidenceStore

REF = branch_ref("api", "d-42")


def _note_file(repo: Path) -> Path:
    return repo / ".git" / "afdp-locks" / "refs" / (hashlib.sha256(REF.encode()).hexdigest()[:32] + ".lock")


def test_a_clean_update_leaves_no_note_and_the_file_keeps_its_size(repo: Path, signer, tsa) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"n": 0})
    path = _note_file(repo)
    size, inode = path.stat().st_size, path.stat().st_ino
    assert size > 0 and path.read_bytes().strip() == b""
    for i in range(3):
        add_step(repo, signer, tsa, "capture_impact", {"n": i})
    assert path.read_bytes().strip() == b""
    assert (path.stat().st_size, path.stat().st_ino) == (size, inode)


def test_a_dead_holders_long_note_is_read_whole_then_erased(repo: Path, signer, tsa) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"n": 0})
    path = _note_file(repo)
    dead = f"pid 999999 since 1.000 updating {REF} " + "x" * 300
    path.write_text(dead + "\n")
    store = EvidenceStore(repo)
    with store._writer_lock(REF, time.monotonic() + 5) as left:
        assert left == dead
        # while held, the file names this holder, with nothing of the dead one's note
        held = path.read_text().strip()
        assert held.startswith(f"pid {os.getpid()} since ") and held.endswith(f"updating {REF}")
    assert path.read_bytes().strip() == b""
    with store._writer_lock(REF, time.monotonic() + 5) as left:
        assert left is None
    # an error inside the lock erases the note as well
    try:
        with store._writer_lock(REF, time.monotonic() + 5):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert path.read_bytes().strip() == b""
