"""The auditor's trust policy: which keys may sign, which TSA roots may time-stamp.

Verification takes every piece of key material, identity and TSA root from this
policy, never from the evidence repository. A policy file that lives inside the
evidence repository being verified is refused outright: whoever can write evidence
could otherwise write the policy that approves it.

File format (YAML, schema ``evidence-schema/trust-policy.v1.schema.json``)::

    version: 1
    signers:
      - name: dev
        public_key: |            # PEM SubjectPublicKeyInfo
          -----BEGIN PUBLIC KEY-----
        services: ["*"]          # optional fnmatch patterns this signer may sign for
      - name: ci                 # keyless (Sigstore): an expected identity and issuer
        keyless: {identity: "https://github.com/org/repo/...", issuer: "https://token.actions.githubusercontent.com"}
    tsa_roots:
      - name: afdp-dev-tsa
        certificate: |           # PEM certificate of a TSA root CA
          -----BEGIN CERTIFICATE-----
    timestamps: {required: 1}    # valid tokens each record must carry
    clock_skew_seconds: 300      # how far a record's claimed times may lead its TSA time
    sigstore:                    # optional, for keyless signers
      instance: production       # the trusted root shipped with sigstore (or staging)
      trusted_root: root.json    # or a pinned trusted_root.json (relative to this file)
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from securesystemslib.signer import SSlibKey

from afdp.errors import ConfigurationError, SchemaError, UsageError
from afdp.evidence import schemas
from afdp.evidence.files import read_at_most
from afdp.evidence.keyless import KeylessIdentity, SigstoreRoot
from afdp.evidence.signing import public_key_from_pem
from afdp.evidence.yamldata import load_yaml

#: A trust policy is a page of YAML, a Sigstore trusted root a few KiB of JSON: a file
#: larger than this (or ``/dev/zero``) is refused before it is all in memory.
MAX_POLICY_BYTES = 4 << 20
MAX_TRUSTED_ROOT_BYTES = 4 << 20
#: a public key or a certificate chain in PEM
MAX_PEM_BYTES = 1 << 20

SCHEMA = "trust-policy.v1"


@dataclass(frozen=True)
class TrustedSigner:
    """One signer the auditor trusts: a public key, or a keyless identity and issuer."""

    name: str
    key: SSlibKey | None
    services: tuple[str, ...]
    identity: str | None = None
    issuer: str | None = None

    @property
    def keyid(self) -> str | None:
        return self.key.keyid if self.key else None

    def may_sign_for(self, service: str) -> bool:
        return any(fnmatch.fnmatchcase(service, pattern) for pattern in self.services)


@dataclass(frozen=True)
class TrustPolicy:
    """A loaded trust policy; ``document`` is the validated mapping it came from."""

    signers: tuple[TrustedSigner, ...]
    tsa_roots_pem: tuple[tuple[str, bytes], ...]
    required_timestamps: int
    clock_skew: timedelta
    source: str
    document: dict[str, Any]
    sigstore_root: SigstoreRoot = SigstoreRoot()

    def keyless_identities(self) -> list[KeylessIdentity]:
        """Return the keyless (Sigstore) identities the policy trusts, in policy order."""
        return [
            KeylessIdentity(s.name, s.identity, s.issuer)
            for s in self.signers
            if s.identity is not None and s.issuer is not None
        ]

    def keyless_signer(self, name: str) -> TrustedSigner | None:
        """Return the trusted keyless signer called ``name``, or None (names are unique)."""
        for signer in self.signers:
            if signer.name == name and signer.identity is not None:
                return signer
        return None

    def keyless_signer_for(self, identity: str, issuer: str) -> TrustedSigner | None:
        """Return the trusted keyless signer with this certificate identity and OIDC issuer."""
        for signer in self.signers:
            if signer.identity == identity and signer.issuer == issuer:
                return signer
        return None

    def signer_for_keyid(self, keyid: str) -> TrustedSigner | None:
        """Return the trusted key signer with ``keyid``, or None."""
        for signer in self.signers:
            if signer.keyid == keyid:
                return signer
        return None


def parse_trust_policy(
    document: Any,
    *,
    source: str,
    base: Path | None = None,
    evidence_repository: Path | None = None,
) -> TrustPolicy:
    """Return the :class:`TrustPolicy` of a parsed document.

    ``base`` is the folder relative paths in the policy (``sigstore.trusted_root``) are
    resolved against; a pinned file inside ``evidence_repository`` is refused.

    Raises:
        SchemaError: the document does not match the trust-policy schema.
        ConfigurationError: a key, certificate or pinned file does not parse or read;
            two signers share a name, a key, or a keyless identity and issuer (a
            failure would name the wrong one, and their service limits would clash).
        UsageError: a pinned file lies inside the evidence repository.
    """
    schemas.validate(SCHEMA, document, what=f"trust policy {source}")
    signers: list[TrustedSigner] = []
    for entry in document.get("signers", []):
        services = tuple(entry.get("services", ["*"]))
        if "public_key" in entry:
            key = public_key_from_pem(
                entry["public_key"].encode(), source=f"{source}: signer {entry['name']}"
            )
            signers.append(TrustedSigner(entry["name"], key, services))
        else:
            keyless = entry["keyless"]
            signers.append(
                TrustedSigner(entry["name"], None, services, keyless["identity"], keyless["issuer"])
            )
    roots = []
    for entry in document.get("tsa_roots", []):
        pem = entry["certificate"].encode()
        _check_certificate(pem, f"{source}: tsa root {entry['name']}")
        roots.append((entry["name"], pem))
    _refuse_duplicates(signers, source)
    return TrustPolicy(
        signers=tuple(signers),
        tsa_roots_pem=tuple(roots),
        required_timestamps=int(document.get("timestamps", {}).get("required", 1)),
        clock_skew=timedelta(seconds=int(document.get("clock_skew_seconds", 300))),
        source=source,
        document=document,
        sigstore_root=_sigstore_root(document.get("sigstore", {}), base, evidence_repository),
    )


def _refuse_duplicates(signers: list[TrustedSigner], source: str) -> None:
    seen: dict[object, str] = {}
    for signer in signers:
        keys: list[tuple[str, object]] = [("name", signer.name)]
        if signer.keyid is not None:
            keys.append(("key", signer.keyid))
        if signer.identity is not None:
            keys.append(("keyless identity", (signer.identity, signer.issuer)))
        for what, key in keys:
            other = seen.get((what, key))
            if other is not None:
                raise ConfigurationError(
                    f"trust policy {source}: signers {other!r} and {signer.name!r} have the same {what}; "
                    "each signer must be unique"
                )
            seen[(what, key)] = signer.name


def _sigstore_root(
    section: dict[str, Any], base: Path | None, evidence_repository: Path | None
) -> SigstoreRoot:
    instance = section.get("instance", "production")
    pinned = section.get("trusted_root")
    if pinned is None:
        return SigstoreRoot(instance)
    path = Path(pinned)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    _refuse_inside(path, evidence_repository, "pinned Sigstore trusted root")
    try:
        text = read_at_most(path, MAX_TRUSTED_ROOT_BYTES, "pinned Sigstore trusted root").decode("utf-8")
        json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"pinned Sigstore trusted root {path} is not JSON: {exc}") from exc
    return SigstoreRoot(instance, text)


def repository_areas(evidence_repository: Path) -> list[Path]:
    """Return the folders an evidence repository owns: the path given, and the real work
    tree and git dir of the repository found there (pygit2 discovers upward, so
    ``--repo sub`` or ``--repo .git/refs`` opens the enclosing repository)."""
    import pygit2

    areas = [Path(os.path.abspath(evidence_repository)), evidence_repository.resolve()]
    if areas[1].name == ".git":
        areas.append(areas[1].parent)
    try:
        found = pygit2.discover_repository(str(evidence_repository))
        if found:
            repo = pygit2.Repository(found)
            areas.append(Path(repo.path).resolve())
            if repo.workdir:
                areas.append(Path(repo.workdir).resolve())
    except (pygit2.GitError, KeyError, OSError):
        pass  # not a repository: opening it for verification fails on its own
    return list(dict.fromkeys(areas))


def _refuse_inside(path: Path, evidence_repository: Path | None, what: str) -> None:
    if evidence_repository is None:
        return
    # Both the path as given and what it resolves to: a symlink inside the repository is
    # the evidence writer's choice of file, wherever it points.
    candidates = (Path(os.path.abspath(path)), path.resolve())
    for area in repository_areas(evidence_repository):
        if any(c.is_relative_to(area) for c in candidates):
            raise UsageError(
                f"{what} {path} lies inside the evidence repository {area}; "
                "trust material must come from the auditor, not from the evidence"
            )


def load_trust_policy(path: Path, *, evidence_repository: Path | None = None) -> TrustPolicy:
    """Load the auditor's trust policy from ``path``.

    Raises:
        UsageError: ``path`` lies inside ``evidence_repository`` (never trusted).
        ConfigurationError: missing or unreadable file, YAML errors, bad keys.
        SchemaError: the policy does not match its schema.
    """
    _refuse_inside(path, evidence_repository, "trust policy")
    try:
        text = read_at_most(path, MAX_POLICY_BYTES, "trust policy").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"trust policy {path} is not UTF-8 text: {exc}") from exc
    try:
        document = load_yaml(text)  # bounded: the file may come from a package
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"trust policy {path} is not valid YAML: {exc}".replace("\n", " ")
        ) from exc
    try:
        return parse_trust_policy(
            document,
            source=str(path),
            base=path.parent,
            evidence_repository=evidence_repository,
        )
    except SchemaError as exc:
        raise ConfigurationError(str(exc)) from exc


def write_trust_policy(
    path: Path,
    *,
    keys: list[Path],
    tsa_roots: list[Path],
    keyless: list[tuple[str, str]] = (),  # type: ignore[assignment]
    required_timestamps: int = 1,
    sigstore_instance: str | None = None,
    sigstore_trusted_root: Path | None = None,
    force: bool = False,
) -> TrustPolicy:
    """Write a trust policy naming ``keys`` (PEM public keys) and ``tsa_roots`` (PEM CAs).

    Returns the policy as it will be loaded.

    Raises:
        UsageError: the file exists and ``force`` is false, or nothing to trust was given.
        ConfigurationError: a key or certificate does not parse.
    """
    if path.exists() and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    if not (keys or keyless):
        raise UsageError("a trust policy needs at least one signer (--key or --keyless-identity)")
    if not tsa_roots:
        raise UsageError("a trust policy needs at least one TSA root (--tsa-root)")
    signers: list[dict[str, Any]] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        # Several keys or identities may share a file stem or a workflow file name:
        # every signer still gets its own name (-2, -3, ...).
        candidate, number = name, 2
        while candidate in names:
            candidate, number = f"{name}-{number}", number + 1
        names.add(candidate)
        return candidate

    for key_path in keys:
        pem = _read(key_path, "public key")
        key = public_key_from_pem(pem, source=str(key_path))
        signers.append(
            {
                "name": unique(key_path.stem.removesuffix(".key")),
                "public_key": pem.decode(),
                "keyid": key.keyid,
            }
        )
    for identity, issuer in keyless:
        signers.append(
            {
                "name": unique(identity.rsplit("/", 1)[-1] or "keyless"),
                "keyless": {"identity": identity, "issuer": issuer},
            }
        )
    roots = []
    for root_path in tsa_roots:
        pem = _read(root_path, "TSA root certificate")
        _check_certificate(pem, str(root_path))
        roots.append({"name": root_path.parent.name or root_path.stem, "certificate": pem.decode()})
    document = {
        "version": 1,
        "signers": signers,
        "tsa_roots": roots,
        "timestamps": {"required": required_timestamps},
        "clock_skew_seconds": 300,
    }
    if sigstore_instance or sigstore_trusted_root:
        section: dict[str, Any] = {"instance": sigstore_instance or "production"}
        if sigstore_trusted_root is not None:
            section["trusted_root"] = str(sigstore_trusted_root.resolve())
        document["sigstore"] = section
    policy = parse_trust_policy(document, source=str(path), base=path.parent)
    header = "# AFDP trust policy: the auditor's keys and TSA roots. Keep it outside the evidence repository.\n"
    path.write_text(
        header + yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=200),
        encoding="utf-8",
    )
    return policy


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PEM blocks) as YAML literal blocks, readable by people."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _read(path: Path, what: str) -> bytes:
    # a key or a TSA root certificate (chain): a few KiB
    return read_at_most(path, MAX_PEM_BYTES, what)


def _check_certificate(pem: bytes, source: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not a PEM certificate: {exc}") from exc
