"""Crafted bundles: every malformed or hostile input is one clear line and exit 1.

Each bundle here is built byte by byte (pack entries, zlib streams, deltas) the way an
attacker would, then read by the real ``afdp verify --bundle`` in-process; nothing is
mocked. Limits are lowered with monkeypatch only where reaching the real one would need
gigabytes (the bundle file size and total inflated size).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest
import yaml
from test_export import package  # noqa: F401  (fixture: a real package from afdp export)

from afdp.audit import export
from afdp.audit.export import BundleError, open_package, read_bundle, read_pack
from afdp.audit.export import bundle as export_bundle
from afdp.audit.export import reader as export_reader

BRANCH = "refs/heads/afdp/api/d-1"


# -- byte-level builders -------------------------------------------------------------------
def _entry_header(kind: int, size: int) -> bytes:
    byte = (kind << 4) | (size & 15)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ofs(distance: int) -> bytes:
    encoded = bytearray([distance & 0x7F])
    distance >>= 7
    while distance:
        distance -= 1
        encoded.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(encoded)


def entry(kind: int, content: bytes, *, declared: int | None = None) -> bytes:
    """A whole (non-delta) pack entry: type 1 commit, 2 tree, 3 blob, 4 tag."""
    size = len(content) if declared is None else declared
    return _entry_header(kind, size) + zlib.compress(content)


def pack_of(entries: list[bytes], *, count: int | None = None, version: int = 2) -> bytes:
    """A pack with a correct trailing checksum (the attacker can always recompute it)."""
    body = b"PACK" + version.to_bytes(4, "big") + (len(entries) if count is None else count).to_bytes(4, "big")
    body += b"".join(entries)
    return body + hashlib.sha1(body).digest()


def ofs_delta_after(previous: list[bytes], delta: bytes) -> bytes:
    """An OFS_DELTA entry whose base is the first entry of the pack."""
    start = 12 + sum(len(e) for e in previous)
    return _entry_header(6, len(delta)) + _ofs(start - 12) + zlib.compress(delta)


def oid(kind: str, content: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(content)}\0".encode() + content).hexdigest()


def tiny_history() -> tuple[list[bytes], str]:
    """A blob, a tree and a commit: a complete (non-AFDP) history; return entries, commit id."""
    blob = b"hello\n"
    tree = b"100644 a.txt\0" + bytes.fromhex(oid("blob", blob))
    commit = (
        f"tree {oid('tree', tree)}\nauthor a <a@example.invalid> 0 +0000\n"
        "committer a <a@example.invalid> 0 +0000\n\nc\n"
    ).encode()
    return [entry(3, blob), entry(2, tree), entry(1, commit)], oid("commit", commit)


def bundle_of(refs: list[tuple[str, str]], pack: bytes, *, prerequisites: list[str] = ()) -> bytes:
    lines = [f"-{p}\n" for p in prerequisites] + [f"{target} {name}\n" for target, name in refs]
    return b"# v2 git bundle\n" + "".join(lines).encode() + b"\n" + pack


def verify(cli, path: Path, trust: Path):
    result = cli("verify", "--bundle", str(path), "--trust", str(trust))
    lines = result.err.strip().splitlines()
    return result, lines


def assert_refused(cli, tmp_path: Path, trust: Path, data: bytes, message: str) -> None:
    path = tmp_path / "crafted.bundle"
    path.write_bytes(data)
    result, lines = verify(cli, path, trust)
    assert result.code == 1, (result.out, result.err)
    assert len(lines) == 1 and lines[0].startswith("afdp: error: "), result.err
    assert message in lines[0], lines[0]
    assert result.out == ""


# -- finding 8: decompression and delta bombs ----------------------------------------------
def test_delta_bomb_is_refused_before_it_is_built(cli, tmp_path, trust_file):
    """/tmp/qa2/h4.py: a tiny bundle whose delta declares a huge result (was MemoryError)."""
    base = b"\0" * 65536
    first = entry(3, base)
    copies = 200 * 1024 * 1024 // 65536  # 200 MiB from 64 KiB copy instructions
    delta = _varint(len(base)) + _varint(copies * 65536) + b"\x80" * copies
    data = bundle_of([("1" * 40, BRANCH)], pack_of([first, ofs_delta_after([first], delta)]))
    assert len(data) < 2000
    tracemalloc.start()
    try:
        assert_refused(cli, tmp_path, trust_file, data, "pack delta at offset")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_object_declaring_more_than_the_limit_is_not_inflated(cli, tmp_path, trust_file):
    big = entry(3, b"x", declared=export.MAX_OBJECT_BYTES + 1)
    assert_refused(cli, tmp_path, trust_file, bundle_of([("1" * 40, BRANCH)], pack_of([big])), "larger than the 64 MiB limit")


def test_zlib_bomb_stops_at_the_declared_size(cli, tmp_path, trust_file):
    """An entry that says 10 bytes but inflates to 50 MB: inflating stops after 11 bytes."""
    bomb = _entry_header(3, 10) + zlib.compress(b"\0" * (50 * 1024 * 1024), 9)
    data = bundle_of([("1" * 40, BRANCH)], pack_of([bomb]))
    tracemalloc.start()
    try:
        assert_refused(cli, tmp_path, trust_file, data, "inflates to more than its declared 10 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_total_inflated_size_is_capped(cli, tmp_path, trust_file, monkeypatch):
    monkeypatch.setattr(export_bundle, "MAX_TOTAL_BYTES", 10_000)
    entries = [entry(3, bytes([n]) * 4000) for n in range(4)]
    data = bundle_of([("1" * 40, BRANCH)], pack_of(entries))
    assert_refused(cli, tmp_path, trust_file, data, "more than the 10000-byte limit in total")


def test_bundle_file_size_is_capped(cli, tmp_path, trust_file, monkeypatch):
    entries, head = tiny_history()
    monkeypatch.setattr(export_bundle, "MAX_BUNDLE_BYTES", 100)
    data = bundle_of([(head, BRANCH)], pack_of(entries))
    assert_refused(cli, tmp_path, trust_file, data, f"is {len(data)} bytes, more than the 100-byte limit")


def test_delta_result_is_capped_while_building(tmp_path):
    """A delta that declares a small result but whose instructions write more stops early."""
    base = b"a" * 1000
    first = entry(3, base)
    delta = _varint(len(base)) + _varint(10) + b"\x90\xe8" * 50  # 50 copies of 1000 bytes
    with pytest.raises(BundleError, match="produces more than its declared 10 bytes"):
        read_pack(pack_of([first, ofs_delta_after([first], delta)]))


# -- finding 13: refs ----------------------------------------------------------------------
def test_duplicate_ref_is_refused(cli, tmp_path, trust_file):
    """/tmp/qa2/w/dup2.bundle: first a forged head, then the genuine one (git clone refuses)."""
    entries, head = tiny_history()
    data = bundle_of([("2" * 40, BRANCH), (head, BRANCH)], pack_of(entries))
    assert_refused(cli, tmp_path, trust_file, data, f"bundle lists {BRANCH} twice")


def test_extra_refs_are_refused_and_named(cli, tmp_path, trust_file):
    entries, head = tiny_history()
    data = bundle_of([(head, BRANCH), (head, "refs/heads/main")], pack_of(entries))
    assert_refused(
        cli, tmp_path, trust_file, data,
        f"bundle must hold exactly one AFDP evidence branch; it holds {BRANCH}, refs/heads/main",
    )


def test_branch_other_than_the_readme_names_is_refused(cli, tmp_path, trust_file):
    entries, head = tiny_history()
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "README.md").write_text("# AFDP evidence package: api/d-9\n\n| | |\n|---|---|\n| branch | `refs/heads/afdp/api/d-9` |\n")
    (folder / "api-d-9.bundle").write_bytes(bundle_of([(head, BRANCH)], pack_of(entries)))
    result, lines = verify(cli, folder, trust_file)
    assert result.code == 1 and len(lines) == 1
    assert lines[0] == (
        "afdp: error: api-d-9.bundle holds refs/heads/afdp/api/d-1, "
        "but the package README names refs/heads/afdp/api/d-9"
    )


def test_invalid_git_ref_name_is_refused(cli, tmp_path, trust_file):
    """Names git refuses (``..``, ``.lock``) are not AFDP names either (refused before this fix too)."""
    entries, head = tiny_history()
    for name in ("d..1", "d-1.lock"):
        data = bundle_of([(head, f"refs/heads/afdp/api/{name}")], pack_of(entries))
        assert_refused(cli, tmp_path, trust_file, data, "holds no AFDP evidence branch (it holds refs/heads/afdp/api/")


def test_ref_to_a_blob_is_refused(cli, tmp_path, trust_file):
    entries, _ = tiny_history()
    data = bundle_of([(oid("blob", b"hello\n"), BRANCH)], pack_of(entries))
    assert_refused(cli, tmp_path, trust_file, data, "points at a blob, not a commit")


def test_prerequisite_lines_are_refused(cli, tmp_path, trust_file):
    entries, head = tiny_history()
    data = bundle_of([(head, BRANCH)], pack_of(entries), prerequisites=["3" * 40])
    assert_refused(cli, tmp_path, trust_file, data, "prerequisite commits")


# -- other crafted packs -------------------------------------------------------------------
def _with_history(pack: bytes) -> bytes:
    return bundle_of([("1" * 40, BRANCH)], pack)


def test_truncated_pack_with_recomputed_checksum(cli, tmp_path, trust_file):
    entries, _ = tiny_history()
    whole = pack_of(entries)[:-20]
    cut = whole[: len(whole) - 5]
    assert_refused(cli, tmp_path, trust_file, _with_history(cut + hashlib.sha1(cut).digest()), "pack is truncated")


def test_pack_count_larger_than_its_objects(cli, tmp_path, trust_file):
    entries, _ = tiny_history()
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of(entries, count=2**32 - 1)), "pack is truncated")


def test_bad_pack_header(cli, tmp_path, trust_file):
    entries, _ = tiny_history()
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of(entries, version=4)), "unsupported pack version 4")
    assert_refused(cli, tmp_path, trust_file, _with_history(b"JUNK" + pack_of(entries)[4:]), "bundle holds no pack")


def test_bad_bundle_header(cli, tmp_path, trust_file):
    assert_refused(cli, tmp_path, trust_file, b"# v2 git bundle\n" + b"1" * 40 + b" " + BRANCH.encode(), "bundle header is truncated")
    assert_refused(cli, tmp_path, trust_file, b"# v2 git bundle\nnot a ref line\n\n", "bad bundle header line")
    assert_refused(cli, tmp_path, trust_file, b"# v3 git bundle\n@filter=blob:none\n\n", "unsupported bundle capability")
    assert_refused(cli, tmp_path, trust_file, b"\x00\xff" * 10, "not a git bundle")


def test_wrong_pack_checksum(cli, tmp_path, trust_file):
    entries, head = tiny_history()
    pack = bytearray(pack_of(entries))
    pack[-1] ^= 0xFF
    assert_refused(cli, tmp_path, trust_file, bundle_of([(head, BRANCH)], bytes(pack)), "pack checksum does not match")


def test_unknown_object_type(cli, tmp_path, trust_file):
    bad = _entry_header(5, 3) + zlib.compress(b"abc")
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of([bad])), "has unknown type 5")


def test_object_that_does_not_inflate(cli, tmp_path, trust_file):
    bad = _entry_header(3, 3) + b"\x78\x9c not zlib at all" + b"\0" * 20
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of([bad])), "does not inflate")


def test_ref_delta_to_missing_base(cli, tmp_path, trust_file):
    delta = _varint(5) + _varint(5) + b"\x05hello"
    ref_delta = _entry_header(7, len(delta)) + bytes.fromhex("ab" * 20) + zlib.compress(delta)
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of([ref_delta])), "refer to objects the bundle does not hold")


def test_ofs_delta_pointing_before_the_pack(cli, tmp_path, trust_file):
    delta = _varint(5) + _varint(5) + b"\x05hello"
    bad = _entry_header(6, len(delta)) + _ofs(10_000) + zlib.compress(delta)
    assert_refused(cli, tmp_path, trust_file, _with_history(pack_of([bad])), "refer to objects the bundle does not hold")


def test_truncated_delta_instructions(cli, tmp_path, trust_file):
    """A copy instruction whose offset bytes are missing (was a raw IndexError)."""
    first = entry(3, b"hello world")
    delta = _varint(11) + _varint(5) + b"\x91"  # copy: offset byte and size byte missing
    data = _with_history(pack_of([first, ofs_delta_after([first], delta)]))
    assert_refused(cli, tmp_path, trust_file, data, "pack delta at offset")


def test_delta_copy_past_its_base(cli, tmp_path, trust_file):
    first = entry(3, b"hello world")
    delta = _varint(11) + _varint(5) + b"\x91\x0a\x05"  # copy 5 bytes from offset 10
    data = _with_history(pack_of([first, ofs_delta_after([first], delta)]))
    assert_refused(cli, tmp_path, trust_file, data, "copies past its base object")


def test_malformed_commit_object(cli, tmp_path, trust_file):
    commit = b"this is not a commit\n"
    data = bundle_of([(oid("commit", commit), BRANCH)], pack_of([entry(1, commit)]))
    assert_refused(cli, tmp_path, trust_file, data, "is not a well-formed commit")


def test_long_reverse_delta_chain_resolves(tmp_path):
    """2000 REF deltas listed before their bases: resolved in one pass over a graph."""
    contents = [b"base object\n"]
    entries = [entry(3, contents[0])]
    for _ in range(1, 2000):
        previous = contents[-1]
        contents.append(previous + b"+")
        # copy the whole base (offset 0, two size bytes), then insert one byte
        delta = _varint(len(previous)) + _varint(len(previous) + 1) + b"\xb0" + len(previous).to_bytes(2, "little") + b"\x01+"
        entries.append(_entry_header(7, len(delta)) + bytes.fromhex(oid("blob", previous)) + zlib.compress(delta))
    objects = read_pack(pack_of(list(reversed(entries))))
    assert sorted(c for _, c in objects) == sorted(contents)


def test_git_bundles_still_read(tmp_path):
    """The limits and ref rules leave a normal bundle alone (library-level round trip)."""
    entries, head = tiny_history()
    path = tmp_path / "api-d-1.bundle"
    path.write_bytes(bundle_of([(head, BRANCH)], pack_of(entries)))
    refs, pack = read_bundle(path.read_bytes())
    assert refs == {BRANCH: head} and len(read_pack(pack)) == 3
    opened = open_package(path, trust=tmp_path / "unused.yaml")
    assert (opened.service, opened.deployment) == ("api", "d-1")


# -- the package's own trust policy --------------------------------------------------------
def _package_with_policy(tmp_path: Path, policy_text: str) -> Path:
    entries, head = tiny_history()
    folder = tmp_path / "pkg"
    (folder / "trust").mkdir(parents=True)
    (folder / "api-d-1.bundle").write_bytes(bundle_of([(head, BRANCH)], pack_of(entries)))
    (folder / "trust" / "trust-policy.yaml").write_text(policy_text)
    return folder


def test_package_policy_pinning_a_file_outside_the_package_is_refused(cli, tmp_path, trust_file):
    """A package policy naming /dev/zero as its Sigstore root would be read forever."""
    for pinned in ("/dev/zero", "../../../../etc/hostname"):
        folder = _package_with_policy(tmp_path / pinned.replace("/", "_"), f"version: 1\nsigstore:\n  trusted_root: {pinned}\n")
        result = cli("verify", "--bundle", str(folder))
        assert result.code == 1 and result.err.strip() == (
            f"afdp: error: the package's trust policy pins '{pinned}', which is not a file in its trust/ folder"
        )
        # the auditor's own policy does not read the package's at all
        assert "pins" not in cli("verify", "--bundle", str(folder), "--trust", str(trust_file)).err


def test_oversized_package_policy_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(export_reader, "MAX_POLICY_BYTES", 1000)
    folder = _package_with_policy(tmp_path, "version: 1\n" + "# padding\n" * 200)
    result = cli("verify", "--bundle", str(folder))
    assert result.code == 1 and "trust policy" in result.err and "larger than the 1000-byte limit" in result.err


def test_a_delta_bomb_is_refused_quickly(cli, tmp_path, trust_file):
    """Issue 9, item 9: sizes bound memory, not work. Eight million one-byte copy
    instructions (16 MB of delta, 16 KiB of zlib) used to burn CPU for minutes."""
    import time

    base = entry(3, b"x")
    ops = 8_000_000
    delta = _varint(1) + _varint(ops) + b"\x90\x01" * ops  # copy 1 byte from offset 0
    data = bundle_of([("1" * 40, BRANCH)], pack_of([base, ofs_delta_after([base], delta)]))
    assert len(data) < 64 * 1024
    # CPU time of this process (the CLI runs in it), not wall time: a loaded, shared
    # machine stretches wall time, never the work done.
    started = time.process_time()
    assert_refused(cli, tmp_path, trust_file, data, "instructions to resolve")
    assert time.process_time() - started < 20  # bounded work (about 2 s here), not minutes


# -- a package's files are regular files, opened without blocking (FIFOs, links) -----------
_VERIFY = "import sys; from afdp.cli import main; sys.exit(main())"


def _verify_in_subprocess(path: Path, *args: str):
    """The real CLI in its own process: a hang is a TimeoutExpired, not a stuck test run."""
    return subprocess.run(
        [sys.executable, "-c", _VERIFY, "verify", "--bundle", str(path), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def _replace(target: Path, kind: str, tmp_path: Path) -> None:
    original = target.read_bytes() if target.is_file() else b""
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink-to-copy":  # even a link to the very same bytes is refused
        copy = tmp_path / f"copy-of-{target.name}"
        copy.write_bytes(original)
        target.symlink_to(copy)
    else:
        target.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-copy", "symlink-to-zero"])
@pytest.mark.parametrize("name", ["README.md", "trust/trust-policy.yaml", "BUNDLE"])
def test_fifo_or_link_in_a_package_is_refused_promptly_by_name(package, trust_file, tmp_path, name, kind):  # noqa: F811
    """A FIFO README.md used to hang `afdp verify --bundle` forever (open() blocks)."""
    target = next(package.glob("*.bundle")) if name == "BUNDLE" else package / name
    _replace(target, kind, tmp_path)
    runs = [()] if name.startswith("trust/") else [(), ("--trust", str(trust_file))]
    for args in runs:
        done = _verify_in_subprocess(package, *args)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("afdp: error: "), done.stderr
        assert target.name in lines[0], lines[0]
        what = "FIFO (named pipe)" if kind == "fifo" else "symbolic link"
        assert what in lines[0], lines[0]
    if name.startswith("trust/"):  # the auditor's --trust never reads the package's policy
        assert _verify_in_subprocess(package, "--trust", str(trust_file)).returncode == 0


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-copy"])
def test_fifo_or_link_as_the_pinned_trusted_root_is_refused(package, tmp_path, kind):  # noqa: F811
    """The package policy's pinned Sigstore root is read through the same regular-file helper."""
    policy = package / "trust" / "trust-policy.yaml"
    document = yaml.safe_load(policy.read_text())
    document.setdefault("sigstore", {})["trusted_root"] = "sigstore-trusted-root.json"
    policy.write_text(yaml.safe_dump(document))
    root = package / "trust" / "sigstore-trusted-root.json"
    root.write_text(json.dumps({"mediaType": "x"}))
    _replace(root, kind, tmp_path)
    done = _verify_in_subprocess(package)
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "sigstore-trusted-root.json" in lines[0], done.stderr


def test_fifo_given_as_the_bundle_path_is_named(package, tmp_path):  # noqa: F811
    fifo = tmp_path / "given.bundle"
    os.mkfifo(fifo)
    done = _verify_in_subprocess(fifo)
    assert "Traceback" not in done.stderr and done.returncode != 0, done.stderr
    assert done.stderr.strip() == f"afdp: error: {fifo} is a FIFO (named pipe), not an evidence package"
