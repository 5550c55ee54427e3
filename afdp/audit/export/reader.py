"""Reading and verifying an evidence package: ``afdp verify --bundle``.

:func:`open_package` reads a package (folder or .bundle) into a temporary bare
repository, checking that it holds exactly one complete AFDP branch, the one its README
names; :func:`verify_package` runs every check on it, with the auditor's trust policy or
the package's own (then the :class:`PackageVerification` says "not independent").
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from afdp.audit.export.bundle import _read_limited, read_bundle, read_pack
from afdp.audit.export.files import (
    README_FILE,
    REPORT_FILE,
    SIGSTORE_ROOT_FILE,
    TRUST_DIR,
    TRUST_POLICY_FILE,
    BundleError,
    _kind,
    _limit,
    read_regular,
)
from afdp.audit.export.fingerprints import fingerprint_lines, trust_fingerprints
from afdp.audit.export.readme import _named_branch
from afdp.errors import ConfigurationError, UsageError, visible
from afdp.evidence.names import branch_ref, parse_branch_ref


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
    #: What else the package holds that no check covered (its README and report.html are
    #: the exporter's words: anyone who writes a package can make them say VERIFIED).
    not_checked: tuple[str, ...] = ()

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
        out += self.not_checked_lines()
        # the signer names and fingerprints are the package's own words: shown, never obeyed
        return [visible(line) for line in out]

    def not_checked_lines(self) -> list[str]:
        """The line naming what the verdict does not cover (none when nothing else is there)."""
        if not self.not_checked:
            return []
        return [visible(
            f"  Not checked: {', '.join(self.not_checked)}: the exporter's own words, not evidence "
            "(a package's README or report can say anything); the report of what verified is the "
            "one afdp report writes from this bundle"
        )]

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "ok": self.ok,
            # a script reading "verdict" alone must never see VERIFIED for a package that
            # vouched for itself: what its own policy gave is under "checks"
            "verdict": self.report.state.upper() if self.independent else "NOT INDEPENDENT",
            "checks": self.report.state.upper(),
            "trust_source": self.trust_source,
            "independent": self.independent,
            "headline": self.headline(),
            "trust_policy": str(self.trust),
            "fingerprints": self.fingerprints,
            "not_checked": list(self.not_checked),
            "branches": [self.report.to_json()],
        }
        return document


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
    from afdp.evidence.yamldata import load_yaml

    info = os.lstat(policy)
    if stat.S_ISREG(info.st_mode) and info.st_size > MAX_POLICY_BYTES:
        raise BundleError(
            f"the package's trust policy {policy} is larger than the {_limit(MAX_POLICY_BYTES)} limit"
        )
    data = read_regular(policy, MAX_POLICY_BYTES, "trust policy")
    try:
        document = load_yaml(data.decode("utf-8"))
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
        report, opened.trust_source, opened.trust, path, trust_fingerprints(policy),
        _not_checked(path, opened),
    )


def _not_checked(path: Path, opened: OpenedPackage) -> tuple[str, ...]:
    """Name what sits in the package beside the bundle that verification did not read: for
    a package folder every other entry (the trust folder only when a policy from outside
    it replaced it), for a .bundle file given alone the README and report that an export puts beside it."""
    trust_dir = (opened.bundle.parent / TRUST_DIR).resolve()
    trust_read = opened.trust_source == "package" or opened.trust.resolve().is_relative_to(trust_dir)
    read = {opened.bundle.name} | ({TRUST_DIR} if trust_read else set())
    if path.is_dir():
        names = sorted(entry.name for entry in path.iterdir() if entry.name not in read)
    else:
        names = [name for name in (README_FILE, REPORT_FILE) if os.path.lexists(opened.bundle.parent / name)]
    return tuple(f"{name}/" if (opened.bundle.parent / name).is_dir() else name for name in names)
