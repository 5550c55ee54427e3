"""Recording one record overlaps its waits, and keeps what it may across appends.

While a record's time-stamp request is in flight, a helper thread writes its envelope
(and its other files) and reads the trees the commit extends; only the token, the trees
holding it, the commit and the compare-and-swap wait for the TSA's answer. A thread
keeps its opened repository (``writer_store``) and the tail it committed from one append
to the next.

Real parts: the embedded TSA over loopback HTTP, real repositories, ``check_branch``.
The TSAs that hold their answer back until the envelope is on disk, or never answer,
are real HTTP servers on loopback. A TSA that this process serves itself is, for the
ledger, one that answers from another process once the hint that says so is emptied
(``_PORTS_SERVED_HERE``): that is the path taken with a real, remote TSA.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pygit2
import pytest
from conftest import Tsa, add_step

from afdp.errors import StorageError, TimestampError
from afdp.evidence import records as rec
from afdp.evidence.ledger import append_record
from afdp.evidence.names import branch_ref
from afdp.evidence.notary import EmbeddedTSA, serve
from afdp.evidence.store import EvidenceStore, init_repository, writer_store
from afdp.evidence.timestamp import request as tsa_request
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

REF = branch_ref("api", "d-42")


@pytest.fixture()
def remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every TSA counts as answering from another process (as a real TSA does)."""
    monkeypatch.setattr(tsa_request, "_PORTS_SERVED_HERE", set())


def _loose_objects(repo: Path) -> dict[str, bytes]:
    objects = Path(pygit2.Repository(str(repo)).path) / "objects"
    found = {}
    for path in objects.glob("[0-9a-f][0-9a-f]/*"):
        try:
            found[path.parent.name + path.name] = zlib.decompress(path.read_bytes())
        except (OSError, zlib.error):  # being written right now
            continue
    return found


def _envelopes_not_in(repo: Path, before: set[str]) -> list[str]:
    return [
        oid
        for oid, raw in _loose_objects(repo).items()
        if oid not in before and raw.startswith(b"blob ") and b'"payloadType"' in raw
    ]


def _verify(repo: Path, trust_file: Path, records: int) -> None:
    report = check_branch(
        repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), allow_unsealed=True
    )
    assert report.ok, report.failures[:3]
    assert [r.sequence for r in report.records] == list(range(records))


@pytest.fixture()
def envelope_first_tsa(tsa: Tsa) -> Iterator[tuple[str, dict[str, object]]]:
    """A TSA over HTTP that answers only once a new envelope blob is in the repository
    named in ``state["repo"]`` (waiting up to 5 s), and says in ``state`` whether it saw one."""
    embedded = EmbeddedTSA.load(tsa.directory)
    state: dict[str, object] = {"repo": None, "before": set(), "saw": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            repo = state["repo"]
            assert isinstance(repo, Path)
            deadline = time.monotonic() + 5
            found: list[str] = []
            while not found and time.monotonic() < deadline:
                found = _envelopes_not_in(repo, state["before"])  # type: ignore[arg-type]
                time.sleep(0.005)
            state["saw"].append(bool(found))  # type: ignore[attr-defined]
            reply = embedded.respond(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", state
    finally:
        server.shutdown()
        server.server_close()


def test_the_envelope_is_written_while_the_time_stamp_request_is_in_flight(
    repo: Path, signer, tsa: Tsa, trust_file: Path, envelope_first_tsa
) -> None:
    url, state = envelope_first_tsa
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    state["repo"], state["before"] = repo, set(_loose_objects(repo))
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture_impact", result={"i": 1})
    written = append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[url])
    # the TSA held its answer until the record's envelope was in the object database
    assert state["saw"] == [True]
    assert written[-1].sequence == 2 and written[-1].tsa_url == url
    _verify(repo, trust_file, 3)


def test_a_tsa_served_by_this_process_gets_the_blobs_written_first(repo: Path, signer, tsa: Tsa, trust_file: Path) -> None:
    # The embedded TSA on a thread needs the interpreter lock the helper would hold:
    # the ledger knows its port and writes the blobs before asking.
    assert tsa_request.served_here(tsa.url)
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    _verify(repo, trust_file, 2)


def test_served_here_names_only_the_ports_of_this_process_tsas(tsa: Tsa) -> None:
    with serve(EmbeddedTSA.load(tsa.directory), host="127.0.0.1", port=0) as server:
        assert tsa_request.served_here(server.url)
        port = server.port
    assert not tsa_request.served_here(f"http://127.0.0.1:{port}/")
    assert not tsa_request.served_here("http://127.0.0.1:not-a-port/")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_tsa_that_fails_after_the_envelope_was_written_leaves_the_branch_untouched(
    repo: Path, signer, tsa: Tsa, trust_file: Path, remote: None
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    head = EvidenceStore(repo).head(REF)
    assert head is not None
    before = set(_loose_objects(repo))
    dead = f"http://127.0.0.1:{_closed_port()}/"
    draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture_impact", result={"i": 1})
    with pytest.raises(TimestampError, match="no TSA gave a valid time-stamp token"):
        append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[dead])
    after = EvidenceStore(repo).head(REF)
    assert after is not None and after.id == head.id  # the branch did not move
    # the envelope was written while the TSA was asked: an unreachable blob, nothing more
    orphans = _envelopes_not_in(repo, before)
    assert len(orphans) == 1
    reachable = {str(e.id) for e in after.tree["records"].peel(pygit2.Tree)} | {str(after.tree.id)}
    assert orphans[0] not in reachable
    # the next append succeeds, at the next sequence, on the same head
    written = append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[tsa.url])
    assert written[-1].sequence == 2
    _verify(repo, trust_file, 3)


def test_writers_in_threads_of_one_process_each_keep_a_store_and_chain_correctly(
    repo: Path, signer, tsa: Tsa, trust_file: Path, remote: None
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for i in range(4):
                add_step(repo, signer, tsa, f"{name}-{i}", {"writer": name, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    # and this thread, with its own kept store, between them
    for i in range(3):
        add_step(repo, signer, tsa, f"main-{i}", {"i": i})
    for thread in threads:
        thread.join()
    assert not errors
    # every record cites the one before it, whichever thread (and kept tail) wrote it
    _verify(repo, trust_file, 2 + 8 + 3)


def test_a_kept_tail_never_hides_a_record_another_writer_added(
    repo: Path, signer, tsa: Tsa, trust_file: Path
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})  # this thread's store keeps the tail
    other = threading.Thread(target=add_step, args=(repo, signer, tsa, "capture_impact", {"i": 1}))
    other.start()
    other.join()
    written = add_step(repo, signer, tsa, "decide", {"i": 2})
    assert written[-1].sequence == 3
    _verify(repo, trust_file, 4)


def test_a_thread_keeps_its_store_and_other_threads_get_their_own(repo: Path) -> None:
    mine = writer_store(repo)
    assert writer_store(repo) is mine
    seen: list[EvidenceStore] = []
    thread = threading.Thread(target=lambda: seen.append(writer_store(repo)))
    thread.start()
    thread.join()
    assert seen and seen[0] is not mine


def test_a_repository_replaced_at_the_same_path_is_opened_again(
    tmp_path: Path, signer, tsa: Tsa, trust_file: Path
) -> None:
    repo = tmp_path / "evidence"
    init_repository(repo)
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    kept = writer_store(repo)
    shutil.rmtree(repo)
    init_repository(repo)
    assert writer_store(repo) is not kept
    # a new branch in the new repository: genesis again, nothing of the old one
    written = add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    assert [r.sequence for r in written] == [0, 1]
    _verify(repo, trust_file, 2)


def test_a_prepared_commit_is_the_same_commit_tree_as_one_written_at_once(repo: Path) -> None:
    store = EvidenceStore(repo)
    directory = rec.record_dir(0, "genesis")
    files = {"envelope.json": b"{}", "timestamp-0.tsr": b"\x30\x00"}
    whole = store.write_commit(None, directory, files, "m\n")
    prepared = store.prepare_commit(None, directory, {"envelope.json": b"{}"})
    split = store.write_commit(None, directory, {"timestamp-0.tsr": b"\x30\x00"}, "m\n", prepared=prepared)
    assert store.repo.get(whole).tree.id == store.repo.get(split).tree.id


def test_a_prepared_commit_refuses_a_file_given_twice_and_an_existing_directory(repo: Path) -> None:
    store = EvidenceStore(repo)
    directory = rec.record_dir(0, "genesis")
    prepared = store.prepare_commit(None, directory, {"envelope.json": b"{}"})
    with pytest.raises(StorageError, match="envelope.json is written twice"):
        store.write_commit(None, directory, {"envelope.json": b"[]"}, "m\n", prepared=prepared)
    commit = store.repo.get(store.write_commit(None, directory, {"envelope.json": b"{}"}, "m\n"))
    assert isinstance(commit, pygit2.Commit)
    # a directory that exists is refused before anything waits on a TSA
    with pytest.raises(StorageError, match="already exists in the evidence tree"):
        store.prepare_commit(commit, directory, {"envelope.json": b"{}"})
    with pytest.raises(StorageError, match="prepared on another commit"):
        store.write_commit(commit, rec.record_dir(1, "next"), {}, "m\n", prepared=prepared)


def _tree_by_builder(store: EvidenceStore, entries: dict[str, pygit2.Oid]) -> pygit2.Oid:
    builder = store.repo.TreeBuilder()
    for name, oid in entries.items():
        builder.insert(name, oid, pygit2.enums.FileMode.TREE)
    return builder.write()


@pytest.mark.parametrize(
    ("present", "added"),
    [
        ([f"{i:06d}-step{i}" for i in range(1000, 1999)], "001999-last"),  # a shard's last record
        (["000001-a", "000002-b"], "000003-c"),
        (["000001-a", "000002-b.x"], "000002-b"),  # "000002-b/" sorts after "000002-b.x/"
        (["000005-x", "000009-z"], "000007-y"),  # out of order: placed by a TreeBuilder
        (["000001-a", "000003-c"], "000002-b"),
    ],
)
def test_a_record_added_to_a_shard_gives_the_tree_git_would_write(repo: Path, present: list[str], added: str) -> None:
    store = EvidenceStore(repo)
    blob = store.repo.create_blob(b"x")
    one = store.repo.TreeBuilder()
    one.insert("f", blob, pygit2.enums.FileMode.BLOB)
    leaf = one.write()
    shard = _tree_by_builder(store, dict.fromkeys(present, leaf))
    records = _tree_by_builder(store, {"001": shard})
    root = _tree_by_builder(store, {"records": records})
    parent = store.repo.get(store.repo.create_commit(None, *([pygit2.Signature("a", "a@b", 0, 0)] * 2), "m\n", root, []))
    commit = store.repo.get(store.write_commit(parent, f"records/001/{added}", {"f": b"x"}, "m\n"))
    expected = _tree_by_builder(store, dict.fromkeys([*present, added], leaf))
    assert commit.tree["records/001"].id == expected


def test_a_record_already_in_its_shard_is_refused(repo: Path) -> None:
    store = EvidenceStore(repo)
    directory = rec.record_dir(1, "step")
    first = store.repo.get(store.write_commit(None, directory, {"f": b"x"}, "m\n"))
    with pytest.raises(StorageError, match="already exists"):
        store.write_commit(first, directory, {"f": b"y"}, "m\n")


class _WatchingTSA(EmbeddedTSA):
    """The embedded TSA, served by this process, noting at each request whether a new
    envelope blob was already in ``repo`` when the request arrived."""

    repo: Path | None = None
    before: set[str] = set()
    seen: list[bool] = []

    def respond(self, request_der: bytes) -> bytes:
        assert self.repo is not None
        self.seen.append(bool(_envelopes_not_in(self.repo, self.before)))
        return super().respond(request_der)


def test_with_a_tsa_of_this_process_the_envelope_is_written_before_the_request(
    repo: Path, signer, tsa: Tsa, trust_file: Path
) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    watching = _WatchingTSA.load(tsa.directory)
    assert isinstance(watching, _WatchingTSA)
    watching.repo, watching.before, watching.seen = repo, set(_loose_objects(repo)), []
    with serve(watching, host="127.0.0.1", port=0) as server:
        assert tsa_request.served_here(server.url)
        draft = rec.RecordDraft(kind=rec.KIND_STEP, step="capture_impact", result={"i": 1})
        append_record(repo, service="api", deployment="d-42", draft=draft, signer=signer, tsa_urls=[server.url])
    assert watching.seen == [True]
    _verify(repo, trust_file, 3)


def test_the_kept_store_remembers_the_tail_it_committed(repo: Path, signer, tsa: Tsa) -> None:
    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})  # also makes afdp-locks/: reopened
    kept = writer_store(repo)
    written = add_step(repo, signer, tsa, "capture_impact", {"i": 1})
    store = writer_store(repo)
    assert store is kept
    head = store.head(REF)
    assert head is not None and str(head.id) == written[-1].commit_id
    assert head.id in store.tails  # the next append will not read the record back


def test_a_repository_git_gc_touched_is_opened_again_and_appended_to(
    repo: Path, signer, tsa: Tsa, trust_file: Path
) -> None:
    import subprocess

    add_step(repo, signer, tsa, "capture_baseline", {"i": 0})
    kept = writer_store(repo)
    subprocess.run(["git", "-C", str(repo), "gc", "--quiet", "--prune=now"], check=True)
    assert writer_store(repo) is not kept
    add_step(repo, signer, tsa, "capture_impact", {"i": 1})  # on packed objects and refs
    _verify(repo, trust_file, 3)


def test_a_forked_child_opens_its_own_store(repo: Path) -> None:
    import os

    kept = writer_store(repo)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os._exit(0 if writer_store(repo) is not kept else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert writer_store(repo) is kept


def test_a_statement_is_canonicalized_once_and_a_changed_one_again(repo: Path) -> None:
    from dataclasses import replace

    from afdp.evidence.canonical import canonical_bytes

    record = rec.build_record(
        rec.RecordDraft(kind=rec.KIND_STEP, step="s", result={"p99_ms": 120.0}),
        service="api", deployment="d-42", sequence=1, prev="a" * 64, prev_timestamps={"timestamp-0.tsr": "b" * 64},
    )
    assert record.payload is record.payload
    assert record.payload == canonical_bytes(record.statement)
    statement = {**record.statement, "predicate": {**record.statement["predicate"], "summary": "changed"}}
    changed = replace(record, statement=statement)
    assert changed.payload == canonical_bytes(statement) != record.payload
