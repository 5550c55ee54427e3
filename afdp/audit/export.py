"""Evidence packages: one deployment's branch, the trust to verify it, a report, a README.

``afdp export`` writes::

    pkg/
      README.md                      what this is, the exact commands to check it
      <service>-<deployment>.bundle  git bundle (v2) of refs/heads/afdp/<service>/<deployment>
      report.html                    the compliance report (verdict first)
      trust/trust-policy.yaml        the trust policy the export was verified with
      trust/keys/<name>.pem          each signer's public key named by that policy
      trust/tsa-roots.pem            the TSA root certificates it names (for openssl ts)
      trust/allowed_signers          git allowed-signers (for git log --show-signature)
      trust/sigstore-trusted-root.json   the pinned Sigstore trusted root, if the policy pins one

``afdp verify --bundle pkg/`` verifies it with nothing else installed: the bundle is
read by this module (header, then the pack: checksum, objects, deltas; every size
bounded, see ``MAX_*``) into a temporary bare repository and verified like any evidence
repository. With the auditor's ``--trust`` the package's own policy is not read; without
it the package's policy is used, and the verdict says "not independent" on its first
line, lists the fingerprints to compare out of band, and never exits 0 (docs/audit.md).

Why the bundle is written here rather than with ``git bundle create``: pygit2 has no
bundle API, but its PackBuilder writes the pack, and a v2 bundle is a short text header
in front of a pack; so neither exporting nor verifying needs a git binary, and plain git
(``git bundle verify``, ``git clone``) reads the result. Bundles made by git itself
(deltified packs) are read too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import AfdpError, ConfigurationError, UsageError, VerificationError
from afdp.evidence.names import branch_ref, parse_branch_ref
from afdp.evidence.store import EvidenceStore

BUNDLE_V2 = b"# v2 git bundle\n"
BUNDLE_V3 = b"# v3 git bundle\n"
TRUST_DIR = "trust"
TRUST_POLICY_FILE = "trust-policy.yaml"
SIGSTORE_ROOT_FILE = "sigstore-trusted-root.json"
REPORT_FILE = "report.html"
README_FILE = "README.md"
_TYPES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}
_OFS_DELTA, _REF_DELTA = 6, 7


class BundleError(VerificationError):
    """A bundle is malformed, incomplete or altered (exit 1: the evidence does not verify)."""


@dataclass(frozen=True)
class ExportedPackage:
    """What :func:`export_package` wrote."""

    folder: Path
    bundle: Path
    head: str
    ref: str
    verdict: str
    headline: str
    record_count: int


@dataclass(frozen=True)
class OpenedPackage:
    """A package read into a temporary bare repository, ready for ``afdp verify``."""

    repository: Path
    trust: Path
    service: str
    deployment: str
    bundle: Path
    _temp: Any  # the TemporaryDirectory holding ``repository``; removed with this object
    trust_source: str = "auditor"  # "package": the package's own policy (not independent)


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


def export_package(
    repository: Path | str,
    *,
    service: str,
    deployment: str,
    trust: Path,
    out: Path,
    controls_path: Path | None = None,
) -> ExportedPackage:
    """Verify a deployment and write its evidence package to the new folder ``out``.

    The package is assembled in a temporary folder beside ``out`` and renamed into place,
    so a failure leaves nothing behind. A branch that fails verification is still exported
    (an investigator needs it) and its report and README say FAILED first.

    Raises:
        UsageError: ``out`` exists and is not an empty folder.
        NotFoundError: no such repository or branch.
        ConfigurationError: the trust policy (or control mapping) does not load.
    """
    from afdp.audit.report import build_report, write_report
    from afdp.evidence.trust import load_trust_policy

    ref = branch_ref(service, deployment)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; choose a new --out")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {out}: folder {parent} does not exist")
    policy = load_trust_policy(trust, evidence_repository=Path(repository))
    report = build_report(
        repository,
        policy=policy,
        service=service,
        deployment=deployment,
        controls_path=controls_path,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        bundle = staging / f"{service}-{deployment}.bundle"
        head = write_bundle(repository, ref, bundle)
        _write_trust(staging / TRUST_DIR, trust, policy.document)
        write_report(
            report,
            fmt="html",
            out=staging / REPORT_FILE,
            verify_command=f"afdp verify --bundle {out.name}",
        )
        fingerprints = fingerprint_lines(trust_fingerprints(policy))
        (staging / README_FILE).write_text(
            _readme(
                report.headline, service, deployment, ref, bundle.name, head, out.name, fingerprints
            ),
            encoding="utf-8",
        )
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportedPackage(
        out,
        out / bundle.name,
        head,
        ref,
        report.verdict,
        report.headline,
        len(report.sections[0].verification.records),
    )


def _write_trust(folder: Path, policy_path: Path, document: dict[str, Any]) -> None:
    from afdp.evidence.sshsig import allowed_signers_line

    (folder / "keys").mkdir(parents=True)
    pinned = (document.get("sigstore") or {}).get("trusted_root")
    if pinned is None:
        shutil.copyfile(policy_path, folder / TRUST_POLICY_FILE)
    else:
        # A pinned Sigstore trusted root is a file the policy names: ship it beside the
        # policy and point the package's copy at it, so the package verifies anywhere.
        import copy

        import yaml

        source = Path(pinned) if Path(pinned).is_absolute() else policy_path.parent / pinned
        shutil.copyfile(source, folder / SIGSTORE_ROOT_FILE)
        packaged = copy.deepcopy(document)
        packaged["sigstore"]["trusted_root"] = SIGSTORE_ROOT_FILE
        (folder / TRUST_POLICY_FILE).write_text(
            "# AFDP trust policy, as exported with this evidence package.\n"
            + yaml.safe_dump(packaged, sort_keys=False, width=200),
            encoding="utf-8",
        )
    allowed = []
    for signer in document.get("signers", []):
        pem = signer.get("public_key")
        if not pem:
            continue
        name = re.sub(r"[^A-Za-z0-9._-]", "_", signer["name"])
        (folder / "keys" / f"{name}.pem").write_text(pem, encoding="utf-8")
        try:
            allowed.append(allowed_signers_line(pem.encode()))
        except ConfigurationError:
            pass  # a key type with no SSH form: its commits are checked by afdp verify only
    roots = "".join(entry["certificate"] for entry in document.get("tsa_roots", []))
    (folder / "tsa-roots.pem").write_text(roots, encoding="utf-8")
    (folder / "allowed_signers").write_text(
        "".join(line + "\n" for line in allowed), encoding="utf-8"
    )


def _readme(
    headline: str,
    service: str,
    deployment: str,
    ref: str,
    bundle: str,
    head: str,
    folder: str,
    fingerprints: list[str],
) -> str:
    branch = ref.removeprefix("refs/heads/")
    compare = "".join(f"- {line}\n" for line in fingerprints) or "- (the policy names none)\n"
    return f"""# AFDP evidence package: {service}/{deployment}

**{headline}**

| | |
|---|---|
| branch | `{ref}` |
| head commit | `{head}` |
| bundle | `{bundle}` (git bundle v2, the branch's whole history) |
| trust | `trust/trust-policy.yaml` (the policy this package was verified with), `trust/keys/*.pem`, `trust/tsa-roots.pem`, `trust/allowed_signers` |
| report | `report.html` (self-contained; open in any browser, no network needed) |

The trust material here is what the exporter trusted, and whoever wrote this package
wrote it too: on its own it proves that the package is consistent, not who made it.
Verify with your own trust policy, or compare the fingerprints below with keys and TSA
roots you obtained independently (from the signer's owner, the TSA's published root)
before accepting the package's policy.

## Verify with AFDP

```sh
# with AFDP installed (pip install afdp), nothing else is needed: no git, no network
afdp verify --bundle {folder}/{bundle} --trust /path/to/auditors-own-trust.yaml
```

Exit 0: every record's signature, RFC3161 time-stamp, digest chain and the seal verified
against your policy (the package's own policy is not read). Exit 1: a check failed; each
failure names the record, the check and the reason.

Without `--trust`, `afdp verify --bundle {folder}/` runs every check against the package's
own `trust/trust-policy.yaml`, prints `VERIFIED against the package's OWN trust policy —
not independent` (or FAILED ...) first, then the fingerprints to compare, and exits 1
whatever the checks say: nothing outside the package vouched for its keys. If the
fingerprints match ones you obtained independently, accept the package's policy
explicitly (exit 0 when every check passes):

```sh
afdp verify --bundle {folder}/ --trust {folder}/trust/trust-policy.yaml
```

### Fingerprints to compare out of band

{compare}
Public key SHA-256: `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`; SSH
fingerprint: `ssh-keygen -lf KEY.pub`; TSA root: `openssl x509 -in ROOT.pem -noout
-fingerprint -sha256 -subject`.

## Independent checks (plain git and openssl, no AFDP)

Run from inside this folder.

```sh
work=$(mktemp -d)

# 1. the bundle is a complete, well-formed git bundle (git needs a repository to run in)
git init -q "$work/check" && git -C "$work/check" bundle verify "$PWD/{bundle}"

# 2. read the evidence with plain git
git clone -q --bare {bundle} "$work/evidence.git"
git -C "$work/evidence.git" log --format='%h %s' {branch}

# 3. every commit carries an SSH signature by the record's signer
git -C "$work/evidence.git" -c gpg.format=ssh \\
    -c gpg.ssh.allowedSignersFile="$PWD/trust/allowed_signers" log --show-signature {branch}

# 4. every RFC3161 token is over its record's signature and chains to a trusted TSA root
git -C "$work/evidence.git" ls-tree -r --name-only {branch} | grep '\\.tsr$' | while read -r tsr; do
  record=${{tsr%/*}}
  git -C "$work/evidence.git" show "{branch}:$tsr" > "$work/token.tsr"
  git -C "$work/evidence.git" show "{branch}:$record/envelope.json" | python3 -c \\
    'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["signatures"][0]["sig"]))' \\
    > "$work/signature.bin"
  printf '%s: ' "$tsr"
  openssl ts -verify -in "$work/token.tsr" -data "$work/signature.bin" -CAfile trust/tsa-roots.pem
done
```

Each token must print `Verification: OK`. The token's message imprint is the SHA-256 of
the record's DSSE signature (the bytes `-data` names), so a token cannot be moved to
another record. Record digests (SHA-256 of `envelope.json`) chain each record to the one
before it (`prev`), and the last record, the seal, lists them all.
"""


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
_MIB = 1024 * 1024


def _limit(value: int) -> str:
    return f"{value // _MIB} MiB" if value % _MIB == 0 else f"{value}-byte"


def _locate(path: Path) -> tuple[Path, Path | None]:
    """Return (bundle file, package folder or None) for a folder or a .bundle path."""
    if path.is_dir():
        # Every entry named *.bundle, whatever it is: a FIFO or a link among them is then
        # refused by name when read (read_regular), not silently skipped.
        bundles = sorted(path.glob("*.bundle"))
        if len(bundles) != 1:
            what = "no .bundle file" if not bundles else f"{len(bundles)} .bundle files"
            raise UsageError(f"{path} holds {what}; pass the .bundle file itself")
        return bundles[0], path
    if path.is_file():
        return path, path.parent
    if os.path.lexists(path):
        raise UsageError(f"{path} is a {_kind(os.lstat(path).st_mode)}, not an evidence package")
    raise UsageError(f"no evidence package at {path}")


def read_regular(path: Path, limit: int, what: str = "file") -> bytes:
    """Read a file of a package: a regular file only, opened without blocking and
    without following a symbolic link, at most ``limit`` bytes.

    A package may come from anyone (tar keeps FIFOs, devices and symlinks): a FIFO named
    README.md would block a plain ``open`` forever, a link could point at ``/dev/zero``.
    Every file the package reader opens goes through here.

    Raises:
        BundleError: not a regular file (named), a link, or larger than ``limit``.
        UsageError: it cannot be opened at all (missing, no permission).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(f"{path.name} is a symbolic link; a package holds regular files only") from None
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(
                f"{path.name} is a {_kind(info.st_mode)}, not a regular file; "
                "a package holds regular files only"
            )
        if info.st_size > limit:
            raise BundleError(
                f"{path.name} is {info.st_size} bytes, more than the {_limit(limit)} limit for a {what}"
            )
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise BundleError(f"{path.name} is more than the {_limit(limit)} limit for a {what}")
        return b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


_KINDS = (
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symbolic link"),
)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words ("FIFO (named pipe)", "directory", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


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


_README_BRANCH = re.compile(r"^\| branch \| `(refs/[^`]+)` \|$", re.MULTILINE)


def _named_branch(folder: Path | None) -> str | None:
    """The branch the package README names (``| branch | `refs/...` |``), if it names one."""
    if folder is None:
        return None
    readme = folder / README_FILE
    if not os.path.lexists(readme):
        return None
    text = read_regular(readme, 1024 * 1024, "README").decode("utf-8", "replace")
    match = _README_BRANCH.search(text)
    return match.group(1) if match else None


def _single_branch(
    refs: dict[str, str], bundle: Path, folder: Path | None
) -> tuple[str, str, str, str]:
    """Return (ref, commit id, service, deployment) of the bundle's one AFDP branch."""
    held = ", ".join(refs) or "no refs"
    branches = [ref for ref in refs if parse_branch_ref(ref)]
    if not branches:
        raise BundleError(f"{bundle.name} holds no AFDP evidence branch (it holds {held})")
    if len(refs) != 1:
        raise BundleError(
            f"{bundle.name}: a bundle must hold exactly one AFDP evidence branch; it holds {held}"
        )
    (ref,) = branches
    if not pygit2.reference_is_valid_name(ref):
        raise BundleError(f"{bundle.name} names {ref!r}, which is not a valid git ref name")
    named = _named_branch(folder)
    if named is not None and named != ref:
        raise BundleError(f"{bundle.name} holds {ref}, but the package README names {named}")
    service, deployment = parse_branch_ref(ref)  # type: ignore[misc]
    return ref, refs[ref], service, deployment


def open_package(
    path: Path,
    *,
    trust: Path | None = None,
    service: str | None = None,
    deployment: str | None = None,
) -> OpenedPackage:
    """Read an evidence package (folder or .bundle) into a temporary bare repository.

    The trust policy is ``trust`` if given (the auditor's own), else the package's
    ``trust/trust-policy.yaml`` (``OpenedPackage.trust_source`` says which). The bundle
    must hold exactly one ref, an AFDP branch, and the branch the package README names.
    The temporary repository is removed when the returned object is garbage-collected.

    Raises:
        UsageError: no package there; no trust policy in it and none given; the branch
            is not the ``service``/``deployment`` asked for.
        BundleError: the bundle is malformed, altered, incomplete, too large, or holds
            other refs than its one branch.
    """
    bundle, folder = _locate(path)
    trust_source = "auditor"
    if trust is None:
        candidate = folder / TRUST_DIR / TRUST_POLICY_FILE if folder else None
        # lexists, not is_file: a FIFO or link in its place is refused by name when read.
        if candidate is None or not os.path.lexists(candidate):
            raise UsageError(
                f"evidence package {path} has no trust material ({TRUST_DIR}/{TRUST_POLICY_FILE}); "
                "pass --trust with the auditor's trust policy"
            )
        trust, trust_source = candidate, "package"
    refs, pack = read_bundle(_read_limited(bundle))
    ref, head, found_service, found_deployment = _single_branch(refs, bundle, folder)
    if (service or deployment) and (service, deployment) != (found_service, found_deployment):
        raise UsageError(
            f"{bundle.name} holds {ref}, not {branch_ref(service or '-', deployment or '-')}"
        )
    objects = read_pack(pack)
    temp = tempfile.TemporaryDirectory(prefix="afdp-bundle-")
    repository = Path(temp.name) / "evidence.git"
    git = pygit2.init_repository(str(repository), bare=True)
    kinds = {
        "commit": pygit2.enums.ObjectType.COMMIT,
        "tree": pygit2.enums.ObjectType.TREE,
        "blob": pygit2.enums.ObjectType.BLOB,
        "tag": pygit2.enums.ObjectType.TAG,
    }
    for kind, content in objects:
        git.odb.write(kinds[kind], content)
    _check_complete(git, head, ref)
    git.references.create(ref, head)
    return OpenedPackage(
        repository, trust, found_service, found_deployment, bundle, temp, trust_source
    )


_KIND_NAMES = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}


def _check_complete(git: pygit2.Repository, oid: str, ref: str) -> None:
    """``oid`` is a commit and every object reachable from it is present and parses."""
    seen: set[str] = set()
    stack = [oid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if not git.odb.exists(current):
            raise BundleError(
                f"bundle is incomplete: {ref} needs object {current} it does not hold"
            )
        kind = _KIND_NAMES.get(int(git.odb.read(current)[0]), "object")
        if current == oid and kind != "commit":
            raise BundleError(f"{ref} points at a {kind}, not a commit")
        try:
            obj = git.get(current)
            if isinstance(obj, pygit2.Commit):
                stack.append(str(obj.tree_id))
                stack.extend(str(p) for p in obj.parent_ids)
            elif isinstance(obj, pygit2.Tree):
                stack.extend(str(entry.id) for entry in obj)
        except (pygit2.GitError, ValueError) as exc:
            raise BundleError(
                f"bundle object {current} is not a well-formed {kind}: {exc}".replace("\n", " ")
            ) from exc


# -- verifying -----------------------------------------------------------------------------
NOT_INDEPENDENT = "against the package's OWN trust policy — not independent"


@dataclass(frozen=True)
class PackageVerification:
    """``afdp verify --bundle``'s outcome: the branch report and where its trust came from.

    ``trust_source`` is ``"auditor"`` (``--trust`` given: the package's policy was not
    read) or ``"package"`` (the package's own ``trust/trust-policy.yaml``). A package
    verified only against its own policy proves that it is internally consistent, not
    who made it: an attacker can ship their own key, TSA and policy. So it never exits
    0; ``fingerprints`` are what the auditor must compare out of band before accepting
    that policy with ``--trust``.
    """

    report: Any  # afdp.verify.verifier.BranchReport
    trust_source: str
    trust: Path
    package: Path
    fingerprints: dict[str, Any]

    @property
    def independent(self) -> bool:
        return self.trust_source == "auditor"

    @property
    def ok(self) -> bool:
        return self.independent and self.report.ok

    @property
    def exit_code(self) -> int:
        from afdp.errors import EXIT_FAILED

        return 0 if self.ok else EXIT_FAILED

    def headline(self) -> str:
        """The verdict line; for package trust it starts with the verdict and NOT_INDEPENDENT."""
        report = self.report
        name = f"{report.service}/{report.deployment}"
        verdict = report.state.upper()
        if report.state == "failed":
            detail = f"{len(report.failures)} failure(s) in {len(report.records)} record(s)"
        else:
            signers = ", ".join(sorted({r.signer for r in report.records if r.signer})) or "-"
            sealed = "sealed" if report.sealed else "no seal yet"
            head = report.head[:12] if report.head else "-"
            detail = f"{len(report.records)} record(s), {sealed}; signed by {signers}; head {head}"
        if self.independent:
            return f"{verdict} {name}: {detail}"
        return f"{verdict} {NOT_INDEPENDENT}: {name}: {detail}"

    def lines(self) -> list[str]:
        """The full text verdict for package trust (first line: :meth:`headline`)."""
        out = [self.headline()]
        out += [f"  {f.where}: {f.check}: {f.reason}" for f in self.report.failures]
        out.append(
            "  The keys and TSA roots came from inside the package, so anyone who can write a "
            "package can make this pass: exit 1."
        )
        out.append(
            "  Compare these fingerprints with ones obtained independently (not from this package):"
        )
        out += [f"    {line}" for line in fingerprint_lines(self.fingerprints)]
        out.append(
            "  If they match, accept them: afdp verify --bundle "
            f"{self.package} --trust {self.trust} (or use your own trust policy)"
        )
        return out

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "ok": self.ok,
            "verdict": self.report.state.upper(),
            "trust_source": self.trust_source,
            "independent": self.independent,
            "headline": self.headline(),
            "trust_policy": str(self.trust),
            "fingerprints": self.fingerprints,
            "branches": [self.report.to_json()],
        }
        return document


def trust_fingerprints(policy: Any) -> dict[str, Any]:
    """Return what an auditor compares out of band to trust ``policy`` (a TrustPolicy).

    ``signers``: name, AFDP keyid, SHA-256 of the DER SubjectPublicKeyInfo
    (``openssl pkey -pubin -in KEY.pub -outform DER | sha256sum``), the SSH fingerprint
    (``ssh-keygen -lf``) when the key has an SSH form; or the keyless identity and
    issuer. ``tsa_roots``: SHA-256 of each certificate's DER, as
    ``openssl x509 -noout -fingerprint -sha256`` prints it, and its subject.
    ``sigstore``: the trusted root used for keyless records (pinned file's SHA-256).
    """
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from afdp.evidence.sshsig import allowed_signers_line

    signers = []
    for entry in policy.document.get("signers", []):
        services = entry.get("services", ["*"])
        if "public_key" not in entry:
            keyless = entry.get("keyless", {})
            signers.append(
                {
                    "name": entry["name"],
                    "keyless_identity": keyless.get("identity"),
                    "keyless_issuer": keyless.get("issuer"),
                    "services": services,
                }
            )
            continue
        pem = entry["public_key"].encode()
        der = serialization.load_pem_public_key(pem).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        trusted = next((s for s in policy.signers if s.name == entry["name"]), None)
        try:
            blob = base64.b64decode(allowed_signers_line(pem).rsplit(" ", 1)[1])
            ssh = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        except ConfigurationError:
            ssh = None
        signers.append(
            {
                "name": entry["name"],
                "keyid": trusted.keyid if trusted else None,
                "public_key_sha256": hashlib.sha256(der).hexdigest(),
                "ssh_fingerprint": ssh,
                "services": services,
            }
        )
    roots = []
    for name, pem in policy.tsa_roots_pem:
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:  # load_trust_policy checked one certificate; be sure
            raise ConfigurationError(f"TSA root {name}: {exc}") from exc
        for certificate in certificates:
            digest = certificate.fingerprint(_sha256()).hex().upper()
            roots.append(
                {
                    "name": name,
                    "sha256": ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
                    "subject": certificate.subject.rfc4514_string(),
                }
            )
    root = policy.sigstore_root
    sigstore = None
    if any("keyless" in s for s in policy.document.get("signers", [])) or "sigstore" in (
        policy.document
    ):
        sigstore = {
            "instance": root.instance,
            "pinned_trusted_root_sha256": hashlib.sha256(
                root.trusted_root_json.encode()
            ).hexdigest()
            if root.trusted_root_json
            else None,
        }
    return {"signers": signers, "tsa_roots": roots, "sigstore": sigstore}


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def fingerprint_lines(fingerprints: dict[str, Any]) -> list[str]:
    """One line per signer, TSA root and Sigstore root of :func:`trust_fingerprints`."""
    lines = []
    for signer in fingerprints["signers"]:
        if "keyid" in signer:
            ssh = f", ssh {signer['ssh_fingerprint']}" if signer["ssh_fingerprint"] else ""
            lines.append(
                f"signer {signer['name']}: keyid {signer['keyid']}, public key SHA-256 "
                f"{signer['public_key_sha256']}{ssh}"
            )
        else:
            lines.append(
                f"keyless signer {signer['name']}: identity {signer['keyless_identity']}, "
                f"issuer {signer['keyless_issuer']}"
            )
    for root in fingerprints["tsa_roots"]:
        lines.append(f"TSA root {root['name']}: SHA-256 {root['sha256']}, subject {root['subject']}")
    sigstore = fingerprints.get("sigstore")
    if sigstore:
        pinned = sigstore["pinned_trusted_root_sha256"]
        lines.append(
            f"Sigstore trusted root: pinned file SHA-256 {pinned}"
            if pinned
            else f"Sigstore trusted root: the {sigstore['instance']} root shipped with sigstore"
        )
    return lines


MAX_POLICY_BYTES = 4 * 1024 * 1024


def _load_package_policy(policy: Path, opened: OpenedPackage) -> Any:
    """Load a package's own trust policy, every byte of it read through :func:`read_regular`.

    The policy may only name files inside its ``trust/`` folder, and is small. (A policy
    pinning ``trusted_root: /dev/zero`` would otherwise be read forever; a FIFO in place of
    the policy or its pinned root would block a plain ``open`` forever.) The pinned root is
    checked and read once here; the trust loader is handed a private copy of those bytes.

    Raises:
        BundleError: the policy or its pinned root is not a regular file, too large, or the
            policy pins a file outside ``trust/``.
        ConfigurationError: the policy does not parse or load (as ``load_trust_policy``).
    """
    import copy
    import json

    import yaml

    from afdp.errors import SchemaError
    from afdp.evidence.trust import parse_trust_policy

    info = os.lstat(policy)
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_POLICY_BYTES:
        raise BundleError(
            f"the package's trust policy {policy} is larger than the {_limit(MAX_POLICY_BYTES)} limit"
        )
    data = read_regular(policy, MAX_POLICY_BYTES, "trust policy")
    try:
        document = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            f"trust policy {policy} is not valid YAML: {exc}".replace("\n", " ")
        ) from exc
    section = document.get("sigstore") if isinstance(document, dict) else None
    pinned = section.get("trusted_root") if isinstance(section, dict) else None
    if isinstance(pinned, str):
        folder = policy.parent.resolve()
        source = policy.parent / pinned
        if not source.resolve().is_relative_to(folder) or not os.path.lexists(source):
            raise BundleError(
                f"the package's trust policy pins {pinned!r}, which is not a file in its "
                f"{TRUST_DIR}/ folder"
            )
        root = read_regular(source, MAX_POLICY_BYTES, "pinned trusted root")
        try:
            json.loads(root)
        except ValueError as exc:
            raise ConfigurationError(
                f"pinned Sigstore trusted root {source} is not JSON: {exc}"
            ) from exc
        private = opened.repository.parent / SIGSTORE_ROOT_FILE
        private.write_bytes(root)
        document = copy.deepcopy(document)
        document["sigstore"]["trusted_root"] = str(private)
    try:
        loaded = parse_trust_policy(
            document,
            source=str(policy),
            base=policy.parent,
            evidence_repository=opened.repository,
        )
    except SchemaError as exc:
        raise ConfigurationError(str(exc)) from exc
    if isinstance(pinned, str):
        loaded.document["sigstore"]["trusted_root"] = pinned  # as the package names it
    return loaded


def verify_package(
    path: Path,
    *,
    trust: Path | None = None,
    service: str | None = None,
    deployment: str | None = None,
    allow_unsealed: bool = False,
    jobs: int | None = None,
) -> PackageVerification:
    """Open an evidence package and run every check on its branch.

    With ``trust`` (the auditor's policy) the package's own policy is not read at all.
    Without it the package's policy is used and the result says so (never exit 0).

    Raises:
        UsageError: see :func:`open_package`; ConfigurationError: the policy does not load.
        BundleError: the bundle is malformed, altered, incomplete or too large.
    """
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify.verifier import check_branch

    opened = open_package(path, trust=trust, service=service, deployment=deployment)
    if opened.trust_source == "package":
        policy = _load_package_policy(opened.trust, opened)
    else:
        policy = load_trust_policy(opened.trust, evidence_repository=opened.repository)
    report = check_branch(
        opened.repository,
        service=opened.service,
        deployment=opened.deployment,
        policy=policy,
        allow_unsealed=allow_unsealed,
        jobs=jobs,
    )
    return PackageVerification(
        report, opened.trust_source, opened.trust, path, trust_fingerprints(policy)
    )
