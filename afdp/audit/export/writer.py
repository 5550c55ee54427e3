"""Writing an evidence package: ``afdp export``.

:func:`export_package` verifies a deployment and writes its package (bundle, trust
material, report, README) to a new folder, assembled beside it and renamed into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afdp.audit.export.bundle import write_bundle
from afdp.audit.export.files import (
    README_FILE,
    REPORT_FILE,
    SIGSTORE_ROOT_FILE,
    TRUST_DIR,
    TRUST_POLICY_FILE,
)
from afdp.audit.export.fingerprints import fingerprint_lines, trust_fingerprints
from afdp.audit.export.readme import _readme
from afdp.errors import ConfigurationError, StorageError, UsageError
from afdp.evidence.names import branch_ref


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
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:  # a folder that exists but takes nothing (read-only, /proc)
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from exc
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
