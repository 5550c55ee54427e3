"""Git bundles and packs: writing a v2 bundle, and reading one someone else made.

:func:`write_bundle` writes a branch's whole history with pygit2's PackBuilder behind a v2
bundle header. :func:`read_bundle` and :func:`read_pack` parse a bundle (header, then the
pack: checksum, objects, deltas) with every size and the delta work bounded before
anything is allocated (``MAX_*``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import zlib
from pathlib import Path

import pygit2

from afdp.audit.export.files import BundleError, _limit, read_regular
from afdp.errors import AfdpError
from afdp.evidence.store import EvidenceStore

BUNDLE_V2 = b"# v2 git bundle\n"
BUNDLE_V3 = b"# v3 git bundle\n"


_TYPES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}
_OFS_DELTA, _REF_DELTA = 6, 7


# -- writing -------------------------------------------------------------------------------
def write_bundle(repository: Path | str, ref: str, target: Path) -> str:
    """Write a v2 git bundle of ``ref`` (all of its history) to ``target``; return the head id.

    Raises:
        NotFoundError: no such repository or ref.
    """
    store = EvidenceStore(repository)
    head = store.head(ref)
    if head is None:
        from afdp.errors import NotFoundError

        raise NotFoundError(f"no evidence branch {ref} in {repository}")
    builder = pygit2.PackBuilder(store.repo)
    for commit in store.history(head):
        builder.add_recur(commit.id)
    with tempfile.TemporaryDirectory(prefix="afdp-pack-") as folder:
        builder.write(folder)
        packs = list(Path(folder).glob("*.pack"))
        if len(packs) != 1:
            raise AfdpError(f"packing {ref} produced {len(packs)} packs")
        pack = packs[0].read_bytes()
    header = BUNDLE_V2 + f"{head.id} {ref}\n".encode() + b"\n"
    target.write_bytes(header + pack)
    return str(head.id)


# -- reading -------------------------------------------------------------------------------
# Limits for reading a bundle someone else made. An AFDP deployment's bundle is a few
# hundred KiB (records, attachments, tokens); these leave room for very large evidence
# while keeping a crafted bundle (a 175-byte pack that declares a 1.5 GB delta result)
# from exhausting memory: every size is checked before anything that large is built.
MAX_BUNDLE_BYTES = 256 * 1024 * 1024  # the .bundle file
MAX_OBJECT_BYTES = 64 * 1024 * 1024  # one object: inflated size, and a delta's result
MAX_TOTAL_BYTES = 1024 * 1024 * 1024  # all objects of a bundle, inflated and resolved
MAX_OBJECTS = 1_000_000  # objects a pack may declare
#: Delta instructions a whole pack may take to resolve: sizes alone do not bound the
#: work (tens of millions of one-byte copies fit in 64 KiB of zlib). An AFDP pack of
#: 10,000 records needs a few hundred thousand; this bounds a hostile one to seconds.
MAX_DELTA_INSTRUCTIONS = 4_000_000


def _read_limited(bundle: Path) -> bytes:
    """Read at most :data:`MAX_BUNDLE_BYTES` of ``bundle`` (a larger file is refused)."""
    return read_regular(bundle, MAX_BUNDLE_BYTES, "bundle")


def read_bundle(data: bytes) -> tuple[dict[str, str], bytes]:
    """Return ``({ref: object id}, pack bytes)`` of a v2/v3 git bundle.

    Raises:
        BundleError: not a bundle, a ref listed twice (git refuses such a bundle; reading
            it "last wins" would let a forged first line hide), or a bundle needing
            prerequisite commits (incomplete).
    """
    if data.startswith(BUNDLE_V2):
        position = len(BUNDLE_V2)
    elif data.startswith(BUNDLE_V3):
        position = len(BUNDLE_V3)
    else:
        raise BundleError("not a git bundle (no '# v2 git bundle' header)")
    refs: dict[str, str] = {}
    while True:
        end = data.find(b"\n", position)
        if end < 0:
            raise BundleError("bundle header is truncated")
        line = data[position:end].decode("utf-8", "replace")
        position = end + 1
        if line == "":
            break
        if line.startswith("@"):
            if line != "@object-format=sha1":  # e.g. @filter: a partial bundle
                raise BundleError(f"unsupported bundle capability {line[:80]!r}")
            continue
        if line.startswith("-"):
            raise BundleError(
                "bundle needs prerequisite commits: it does not hold the whole branch"
            )
        match = re.fullmatch(r"([0-9a-f]{40}) (\S+)", line)
        if not match:
            raise BundleError(f"bad bundle header line {line[:80]!r}")
        if match.group(2) in refs:
            raise BundleError(
                f"bundle lists {match.group(2)} twice; a bundle names each ref once"
            )
        refs[match.group(2)] = match.group(1)
    return refs, data[position:]


def _varint_size(data: bytes, pos: int) -> tuple[int, int, int]:
    byte = data[pos]
    kind, size, shift = (byte >> 4) & 7, byte & 15, 4
    pos += 1
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        size |= (byte & 0x7F) << shift
        shift += 7
    return kind, size, pos


def _inflate(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    """Inflate the zlib stream at ``pos``, which must give exactly ``size`` bytes.

    Never produces more than ``size + 1`` bytes, whatever the stream holds (a stream can
    inflate a thousandfold). Returns the content and the position after the stream.
    """
    if size > MAX_OBJECT_BYTES:
        raise BundleError(
            f"pack object at offset {pos} declares {size} bytes, larger than the "
            f"{_limit(MAX_OBJECT_BYTES)} limit per object"
        )
    inflater = zlib.decompressobj()
    view = memoryview(data)
    out = bytearray()
    chunk = max(size + 64, 4096)
    start = pos
    while not inflater.eof:
        if pos >= len(data):
            raise BundleError("pack is truncated")
        piece = view[pos : pos + chunk]
        out += inflater.decompress(piece, size + 1 - len(out))
        if len(out) > size:
            raise BundleError(
                f"pack object at offset {start} inflates to more than its declared {size} bytes"
            )
        pos += len(piece) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
    if len(out) != size:
        raise BundleError(f"pack object at offset {start} inflates to the wrong size")
    return bytes(out), pos


def _apply_delta(base: bytes, delta: bytes, where: int, budget: list[int]) -> bytes:
    """Return ``base`` with the pack delta applied; ``where`` is its offset, for messages.

    ``budget`` (one mutable count for the whole pack) is decreased by every instruction
    applied: a pack that needs more than :data:`MAX_DELTA_INSTRUCTIONS` is refused.
    """

    def varint(pos: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    try:
        source, pos = varint(0)
        target, pos = varint(pos)
        if source != len(base):
            raise BundleError(f"pack delta at offset {where} does not fit its base object")
        if target > MAX_OBJECT_BYTES:
            raise BundleError(
                f"pack delta at offset {where} declares a {target}-byte result, larger than "
                f"the {_limit(MAX_OBJECT_BYTES)} limit per object"
            )
        out = bytearray()
        while pos < len(delta):
            budget[0] -= 1
            if budget[0] < 0:
                raise BundleError(
                    f"pack deltas need more than {MAX_DELTA_INSTRUCTIONS} instructions to "
                    "resolve; refused (an AFDP package needs far fewer)"
                )
            op = delta[pos]
            pos += 1
            if op & 0x80:
                offset = size = 0
                for i in range(4):
                    if op & (1 << i):
                        offset |= delta[pos] << (8 * i)
                        pos += 1
                for i in range(3):
                    if op & (0x10 << i):
                        size |= delta[pos] << (8 * i)
                        pos += 1
                size = size or 0x10000
                if offset + size > len(base):
                    raise BundleError(
                        f"pack delta at offset {where} copies past its base object"
                    )
                out += base[offset : offset + size]
            elif op:
                if pos + op > len(delta):
                    raise IndexError(pos + op)
                out += delta[pos : pos + op]
                pos += op
            else:
                raise BundleError(f"pack delta at offset {where} has a reserved instruction")
            if len(out) > target:
                raise BundleError(
                    f"pack delta at offset {where} produces more than its declared {target} bytes"
                )
    except IndexError as exc:
        raise BundleError(f"pack delta at offset {where} is truncated") from exc
    if len(out) != target:
        raise BundleError(f"pack delta at offset {where} produces the wrong size")
    return bytes(out)


def read_pack(pack: bytes) -> list[tuple[str, bytes]]:
    """Return every object of a pack as ``(type name, content)``, deltas resolved.

    Every size is bounded (:data:`MAX_OBJECT_BYTES` per object and delta result,
    :data:`MAX_TOTAL_BYTES` in all, :data:`MAX_OBJECTS` objects) before it is allocated,
    and so is the work: :data:`MAX_DELTA_INSTRUCTIONS` delta instructions in all.
    Deltas are resolved in one pass over the base -> delta graph, in any order.

    Raises:
        BundleError: bad magic or version, checksum mismatch, a limit exceeded, corrupt,
            truncated or missing objects.
    """
    if len(pack) < 32 or pack[:4] != b"PACK":
        raise BundleError("bundle holds no pack")
    version, count = int.from_bytes(pack[4:8], "big"), int.from_bytes(pack[8:12], "big")
    if version not in (2, 3):
        raise BundleError(f"unsupported pack version {version}")
    if hashlib.sha1(pack[:-20]).digest() != pack[-20:]:
        raise BundleError("pack checksum does not match: the bundle was altered or truncated")
    body = pack[:-20]
    if count > len(body):  # every entry takes at least two bytes
        raise BundleError(f"pack is truncated: it declares {count} objects in {len(body)} bytes")
    if count > MAX_OBJECTS:
        raise BundleError(f"pack declares {count} objects, more than the limit of {MAX_OBJECTS}")
    total = 0

    def account(size: int) -> None:
        nonlocal total
        total += size
        if total > MAX_TOTAL_BYTES:
            raise BundleError(
                f"bundle objects inflate to more than the {_limit(MAX_TOTAL_BYTES)} limit in total"
            )

    by_offset: dict[int, tuple[str, bytes]] = {}
    by_id: dict[bytes, tuple[str, bytes]] = {}
    resolved: list[tuple[int, bytes, tuple[str, bytes]]] = []  # (offset, id, object)
    waiting_offset: dict[int, list[tuple[int, bytes]]] = {}
    waiting_id: dict[bytes, list[tuple[int, bytes]]] = {}
    pos = 12
    try:
        for _ in range(count):
            start = pos
            kind, size, pos = _varint_size(body, pos)
            base: int | bytes | None = None
            if kind == _OFS_DELTA:
                byte = body[pos]
                pos += 1
                distance = byte & 0x7F
                while byte & 0x80:
                    byte = body[pos]
                    pos += 1
                    distance = ((distance + 1) << 7) | (byte & 0x7F)
                base = start - distance
            elif kind == _REF_DELTA:
                base = bytes(body[pos : pos + 20])
                if len(base) != 20:
                    raise IndexError(pos + 20)
                pos += 20
            elif kind not in _TYPES:
                raise BundleError(f"pack object at offset {start} has unknown type {kind}")
            if size > MAX_OBJECT_BYTES:
                raise BundleError(
                    f"pack object at offset {start} declares {size} bytes, larger than the "
                    f"{_limit(MAX_OBJECT_BYTES)} limit per object"
                )
            content, pos = _inflate(body, pos, size)
            account(len(content))
            if base is None:
                obj = (_TYPES[kind], content)
                oid = _object_id(*obj)
                by_offset[start] = obj
                by_id[oid] = obj
                resolved.append((start, oid, obj))
            elif isinstance(base, int):
                waiting_offset.setdefault(base, []).append((start, content))
            else:
                waiting_id.setdefault(base, []).append((start, content))
    except IndexError as exc:
        raise BundleError("pack is truncated") from exc
    except zlib.error as exc:
        raise BundleError(f"pack object does not inflate: {exc}") from exc
    if pos != len(body):
        raise BundleError("pack has trailing data after its objects")
    budget = [MAX_DELTA_INSTRUCTIONS]
    while resolved:
        offset, oid, (kind_name, content) = resolved.pop()
        for start, delta in waiting_offset.pop(offset, []) + waiting_id.pop(oid, []):
            obj = (kind_name, _apply_delta(content, delta, start, budget))
            account(len(obj[1]))
            child = _object_id(*obj)
            by_offset[start] = obj
            by_id[child] = obj
            resolved.append((start, child, obj))
    if waiting_offset or waiting_id:
        raise BundleError("pack deltas refer to objects the bundle does not hold")
    return list(by_offset.values())


def _object_id(kind: str, content: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(content)}\0".encode() + content).digest()
