"""Fingerprints of a trust policy, for an auditor to compare out of band.

:func:`trust_fingerprints` lists each signer's key (SHA-256, SSH fingerprint) or keyless
identity, each TSA root's certificate fingerprint and the pinned Sigstore root;
:func:`fingerprint_lines` prints them one per line (README, ``afdp verify --bundle``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from afdp.errors import ConfigurationError


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
