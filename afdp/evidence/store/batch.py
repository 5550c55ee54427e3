"""Writing the commits of a batch of records on one background thread, in order
(used by :func:`afdp.evidence.ledger.append_records`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pygit2

from afdp.errors import StorageError
from afdp.evidence.store.write import EvidenceStore


class BatchCommitter:
    """Writes the commits of a batch, in order, on one background thread.

    Record N+1 needs record N's envelope and token digests, never its commit, so the
    Git writes of one record (blobs, trees, a signed commit: mostly file creation) run
    while the next record is built, signed and time-stamped. Jobs run in submission
    order, each on the commit of the one before; after the first failure no job writes
    anything more. Only this thread touches the repository while jobs are pending.
    """

    def __init__(self, store: EvidenceStore, parent: pygit2.Commit | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self.parent = parent
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="afdp-commit")
        self._jobs: list[Any] = []
        self._failed = False

    def submit(
        self,
        directory: str,
        files: dict[str, bytes],
        message: str,
        author: tuple[str, str],
        sign: Callable[[bytes], str | None] | None,
    ) -> None:
        def job() -> str:
            if self._failed:
                raise StorageError("an earlier commit of this batch failed")
            try:
                commit_id = self._store.write_commit(
                    self.parent, directory, files, message, author=author, sign=sign
                )
                commit = self._store.repo.get(commit_id)
                assert isinstance(commit, pygit2.Commit)
            except BaseException:
                self._failed = True
                raise
            self.parent = commit
            return str(commit_id)

        if self._failed:  # stop signing and time-stamping: this batch will not land
            self.drain()
        self._jobs.append(self._pool.submit(job))

    def drain(self) -> list[str]:
        """Wait for every job; return the commit ids in order, or raise the first error."""
        return [job.result() for job in self._jobs]

    def close(self) -> None:
        self._failed = self._failed or any(not job.done() for job in self._jobs)
        self._pool.shutdown(wait=True)
