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
read by this module (header, then the pack: checksum, objects, deltas) into a temporary
bare repository and verified like any evidence repository, with the package's trust
policy or, taking precedence, the auditor's own ``--trust``.

Why the bundle is written here rather than with ``git bundle create``: pygit2 has no
bundle API, but its PackBuilder writes the pack, and a v2 bundle is a short text header
in front of a pack; so neither exporting nor verifying needs a git binary, and plain git
(``git bundle verify``, ``git clone``) reads the result. Bundles made by git itself
(deltified packs) are read too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from afdp.errors import AfdpError, ConfigurationError, UsageError, VerificationError
from afdp.names import branch_ref, parse_branch_ref
from afdp.store import EvidenceStore

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
    from afdp.report import build_report, write_report
    from afdp.trust import load_trust_policy

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
        (staging / README_FILE).write_text(
            _readme(report.headline, service, deployment, ref, bundle.name, head, out.name),
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
    from afdp.sshsig import allowed_signers_line

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
    headline: str, service: str, deployment: str, ref: str, bundle: str, head: str, folder: str
) -> str:
    branch = ref.removeprefix("refs/heads/")
    return f"""# AFDP evidence package: {service}/{deployment}

**{headline}**

| | |
|---|---|
| branch | `{ref}` |
| head commit | `{head}` |
| bundle | `{bundle}` (git bundle v2, the branch's whole history) |
| trust | `trust/trust-policy.yaml` (the policy this package was verified with), `trust/keys/*.pem`, `trust/tsa-roots.pem`, `trust/allowed_signers` |
| report | `report.html` (self-contained; open in any browser, no network needed) |

The trust material here is what the exporter trusted. An auditor should compare it with
keys and TSA roots obtained independently, or verify with their own policy (`--trust`
takes precedence over the package's).

## Verify with AFDP

```sh
# with AFDP installed (pip install afdp), nothing else is needed: no git, no network
afdp verify --bundle {folder}/
afdp verify --bundle {folder}/{bundle} --trust /path/to/auditors-own-trust.yaml
```

Exit 0: every record's signature, RFC3161 time-stamp, digest chain and the seal verified.
Exit 1: a check failed; each failure names the record, the check and the reason.

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
def _locate(path: Path) -> tuple[Path, Path | None]:
    """Return (bundle file, package folder or None) for a folder or a .bundle path."""
    if path.is_dir():
        bundles = sorted(path.glob("*.bundle"))
        if len(bundles) != 1:
            what = "no .bundle file" if not bundles else f"{len(bundles)} .bundle files"
            raise UsageError(f"{path} holds {what}; pass the .bundle file itself")
        return bundles[0], path
    if path.is_file():
        return path, path.parent
    raise UsageError(f"no evidence package at {path}")


def read_bundle(data: bytes) -> tuple[dict[str, str], bytes]:
    """Return ``({ref: object id}, pack bytes)`` of a v2/v3 git bundle.

    Raises:
        BundleError: not a bundle, or a bundle needing prerequisite commits (incomplete).
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
                raise BundleError(f"unsupported bundle capability {line!r}")
            continue
        if line.startswith("-"):
            raise BundleError(
                "bundle needs prerequisite commits: it does not hold the whole branch"
            )
        match = re.fullmatch(r"([0-9a-f]{40}) (\S+)", line)
        if not match:
            raise BundleError(f"bad bundle header line {line[:80]!r}")
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
    inflater = zlib.decompressobj()
    view = memoryview(data)
    out = bytearray()
    chunk = max(size + 64, 4096)
    start = pos
    while not inflater.eof:
        if pos >= len(data):
            raise BundleError("pack is truncated")
        piece = view[pos : pos + chunk]
        out += inflater.decompress(piece)
        pos += len(piece)
    pos -= len(inflater.unused_data)
    if len(out) != size:
        raise BundleError(f"pack object at offset {start} inflates to the wrong size")
    return bytes(out), pos


def _apply_delta(base: bytes, delta: bytes) -> bytes:
    def varint(pos: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    source, pos = varint(0)
    target, pos = varint(pos)
    if source != len(base):
        raise BundleError("pack delta does not fit its base object")
    out = bytearray()
    while pos < len(delta):
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
                raise BundleError("pack delta copies past its base object")
            out += base[offset : offset + size]
        elif op:
            out += delta[pos : pos + op]
            pos += op
        else:
            raise BundleError("pack delta has a reserved instruction")
    if len(out) != target:
        raise BundleError("pack delta produces the wrong size")
    return bytes(out)


def read_pack(pack: bytes) -> list[tuple[str, bytes]]:
    """Return every object of a pack as ``(type name, content)``, deltas resolved.

    Raises:
        BundleError: bad magic or version, checksum mismatch, corrupt or missing objects.
    """
    if len(pack) < 32 or pack[:4] != b"PACK":
        raise BundleError("bundle holds no pack")
    version, count = int.from_bytes(pack[4:8], "big"), int.from_bytes(pack[8:12], "big")
    if version not in (2, 3):
        raise BundleError(f"unsupported pack version {version}")
    if hashlib.sha1(pack[:-20]).digest() != pack[-20:]:
        raise BundleError("pack checksum does not match: the bundle was altered or truncated")
    body = pack[:-20]
    by_offset: dict[int, tuple[str, bytes]] = {}
    by_id: dict[bytes, tuple[str, bytes]] = {}
    deltas: list[tuple[int, int | bytes, bytes]] = []
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
                base = body[pos : pos + 20]
                pos += 20
            elif kind not in _TYPES:
                raise BundleError(f"pack object at offset {start} has unknown type {kind}")
            content, pos = _inflate(body, pos, size)
            if base is None:
                obj = (_TYPES[kind], content)
                by_offset[start] = obj
                by_id[_object_id(*obj)] = obj
            else:
                deltas.append((start, base, content))
    except IndexError as exc:
        raise BundleError("pack is truncated") from exc
    except zlib.error as exc:
        raise BundleError(f"pack object does not inflate: {exc}") from exc
    if pos != len(body):
        raise BundleError("pack has trailing data after its objects")
    while deltas:
        waiting = []
        for start, base, content in deltas:
            found = by_offset.get(base) if isinstance(base, int) else by_id.get(base)
            if found is None:
                waiting.append((start, base, content))
                continue
            obj = (found[0], _apply_delta(found[1], content))
            by_offset[start] = obj
            by_id[_object_id(*obj)] = obj
        if len(waiting) == len(deltas):
            raise BundleError("pack deltas refer to objects the bundle does not hold")
        deltas = waiting
    return list(by_offset.values())


def _object_id(kind: str, content: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(content)}\0".encode() + content).digest()


def open_package(
    path: Path,
    *,
    trust: Path | None = None,
    service: str | None = None,
    deployment: str | None = None,
) -> OpenedPackage:
    """Read an evidence package (folder or .bundle) into a temporary bare repository.

    The trust policy is ``trust`` if given (the auditor's own), else the package's
    ``trust/trust-policy.yaml``. The temporary repository is removed when the returned
    object is garbage-collected (or at exit).

    Raises:
        UsageError: no package there; no trust policy in it and none given; the bundle
            holds several deployments and none was named.
        BundleError: the bundle is malformed, altered or incomplete.
    """
    bundle, folder = _locate(path)
    if trust is None:
        candidate = folder / TRUST_DIR / TRUST_POLICY_FILE if folder else None
        if candidate is None or not candidate.is_file():
            raise UsageError(
                f"evidence package {path} has no trust material ({TRUST_DIR}/{TRUST_POLICY_FILE}); "
                "pass --trust with the auditor's trust policy"
            )
        trust = candidate
    try:
        data = bundle.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {bundle}: {exc.strerror or exc}") from exc
    refs, pack = read_bundle(data)
    branches = {ref: oid for ref, oid in refs.items() if parse_branch_ref(ref)}
    if not branches:
        raise BundleError(f"{bundle.name} holds no AFDP evidence branch")
    if service and deployment:
        wanted = branch_ref(service, deployment)
        if wanted not in branches:
            raise UsageError(f"{bundle.name} does not hold {wanted}")
    elif len(branches) == 1:
        service, deployment = parse_branch_ref(next(iter(branches)))  # type: ignore[misc]
    else:
        raise UsageError(
            f"{bundle.name} holds {len(branches)} deployments: pass --service and --deployment"
        )
    assert service is not None and deployment is not None
    temp = tempfile.TemporaryDirectory(prefix="afdp-bundle-")
    repository = Path(temp.name) / "evidence.git"
    git = pygit2.init_repository(str(repository), bare=True)
    kinds = {
        "commit": pygit2.enums.ObjectType.COMMIT,
        "tree": pygit2.enums.ObjectType.TREE,
        "blob": pygit2.enums.ObjectType.BLOB,
        "tag": pygit2.enums.ObjectType.TAG,
    }
    for kind, content in read_pack(pack):
        git.odb.write(kinds[kind], content)
    for ref, oid in branches.items():
        _check_complete(git, oid, ref)
        git.references.create(ref, oid)
    return OpenedPackage(repository, trust, service, deployment, bundle, temp)


def _check_complete(git: pygit2.Repository, oid: str, ref: str) -> None:
    """Every object reachable from ``oid`` is present (a bundle can be cut short)."""
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
        obj = git.get(current)
        if isinstance(obj, pygit2.Commit):
            stack.append(str(obj.tree_id))
            stack.extend(str(p) for p in obj.parent_ids)
        elif isinstance(obj, pygit2.Tree):
            stack.extend(str(entry.id) for entry in obj)
