"""Keyless (Sigstore) signing of records, and their offline verification.

In CI with an ambient OIDC token (GitHub Actions with ``permissions: id-token: write``),
a record can be signed with no key to manage: sigstore-python obtains a short-lived
Fulcio certificate for the workflow's identity, signs the record's in-toto Statement as
a DSSE envelope and logs it in Rekor (``Signer.sign_dsse`` -> bundle v0.3). AFDP stores

* ``envelope.json``: the same DSSE envelope as for key signers (payload, payloadType,
  signature), keyid :data:`KEYLESS_KEYID`, canonical; the record digest and ``prev``
  chain are unchanged;
* ``bundle.sigstore.json``: the complete Sigstore bundle (certificate, Rekor entry and
  inclusion proof) beside it;
* ``timestamp-0.tsr``: the RFC 3161 token over the signature, as for every record.

Verification is offline: :func:`verify_keyless_bundle` checks a bundle against the
Sigstore trusted root shipped inside the ``sigstore`` package (production or staging),
or a trusted-root file the auditor pinned, and against the identities (certificate
SAN) and OIDC issuers the auditor's trust policy names. ``sigstore`` is imported only
here, and only when a keyless record is signed or verified, so ``afdp verify --help``
and key-signed branches never pay for it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from afdp.errors import ConfigurationError, SigningError, VerificationError

#: The keyid written in a keyless record's envelope: there is no long-lived key.
KEYLESS_KEYID = "sigstore"
INSTANCES = ("production", "staging")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"  # Fulcio OIDC issuer (DER UTF8String)
_ISSUER_V1_OID = "1.3.6.1.4.1.57264.1.1"  # Fulcio OIDC issuer (raw bytes, deprecated)
_SIGSTORE_OTHERNAME_OID = "1.3.6.1.4.1.57264.1.7"


class KeylessVerificationError(VerificationError):
    """A Sigstore bundle failed one keyless check.

    ``check`` is ``keyless.bundle`` (does not parse, or is not a DSSE bundle),
    ``keyless.identity`` (certificate identity or issuer not trusted) or
    ``keyless.signature`` (certificate chain, SCT, transparency log or DSSE signature
    does not verify against the Sigstore trusted root).
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message

    def diagnostics(self) -> str:
        """Return ``"<check>: <reason>"`` on one line."""
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class KeylessIdentity:
    """An identity the auditor trusts for keyless records (certificate SAN and OIDC issuer)."""

    name: str
    identity: str
    issuer: str


@dataclass(frozen=True)
class VerifiedKeyless:
    """What :func:`verify_keyless_bundle` established about one bundle."""

    name: str  # the trust policy's name for the identity that matched
    identity: str
    issuer: str
    payload_type: str
    payload: bytes
    signature: bytes
    canonical_json: str = ""  # sigstore's own JSON encoding of the bundle that verified


@dataclass(frozen=True)
class SigstoreRoot:
    """Which Sigstore trusted root verifies keyless records.

    ``trusted_root_json`` (a pinned ``trusted_root.json``) wins over ``instance``, whose
    root is the one shipped inside the installed ``sigstore`` package (offline).
    """

    instance: str = "production"
    trusted_root_json: str | None = None


# ----------------------------------------------------------------------- verification


def bundle_envelope(bundle_json: bytes) -> tuple[str, bytes, bytes]:
    """Return ``(payloadType, payload, signature)`` of a bundle's DSSE envelope.

    Raises:
        KeylessVerificationError: ``keyless.bundle`` if it is not JSON with one DSSE
            signature.
    """
    try:
        document = json.loads(bundle_json)
        envelope = document["dsseEnvelope"]
        signatures = envelope["signatures"]
        if len(signatures) != 1:
            raise ValueError(f"{len(signatures)} signatures, expected 1")
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(signatures[0]["sig"], validate=True)
        return str(envelope["payloadType"]), payload, signature
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeylessVerificationError(
            "keyless.bundle", f"not a Sigstore DSSE bundle: {_one_line(exc)}"
        ) from None


def certificate_identity(certificate: Any) -> tuple[list[str], str | None]:
    """Return the identities (SAN URIs, e-mails, Sigstore other-names) and OIDC issuer."""
    from cryptography import x509

    identities: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        identities += san.get_values_for_type(x509.UniformResourceIdentifier)
        identities += san.get_values_for_type(x509.RFC822Name)
        identities += [
            other.value.decode(errors="replace")
            for other in san.get_values_for_type(x509.OtherName)
            if other.type_id.dotted_string == _SIGSTORE_OTHERNAME_OID
        ]
    except x509.ExtensionNotFound:
        pass
    issuer = None
    for extension in certificate.extensions:
        oid = extension.oid.dotted_string
        if oid == _ISSUER_V2_OID:
            raw = extension.value.value
            # DER UTF8String: tag 0x0c, then a short or long length
            if raw[:1] == b"\x0c":
                length = raw[1]
                start = 2 if length < 0x80 else 2 + (length & 0x7F)
                issuer = raw[start:].decode(errors="replace")
            break
        if oid == _ISSUER_V1_OID and issuer is None:
            issuer = extension.value.value.decode(errors="replace")
    return identities, issuer


@functools.lru_cache(maxsize=8)
def _verifier(root: SigstoreRoot) -> Any:
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    try:
        if root.trusted_root_json is not None:
            # TrustedRoot.from_file only reads the file; the text was read (and checked
            # to be outside the evidence) when the trust policy was loaded.
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                handle.write(root.trusted_root_json)
            try:
                return Verifier(trusted_root=TrustedRoot.from_file(handle.name))
            finally:
                os.unlink(handle.name)
        if root.instance == "staging":
            return Verifier.staging(offline=True)
        return Verifier.production(offline=True)
    except Exception as exc:  # sigstore raises its own and pydantic/betterproto errors
        raise ConfigurationError(f"cannot load the Sigstore trusted root: {_one_line(exc)}") from exc


def verify_keyless_bundle(
    bundle_json: bytes,
    *,
    identities: Sequence[KeylessIdentity],
    root: SigstoreRoot = SigstoreRoot(),
) -> VerifiedKeyless:
    """Verify a Sigstore DSSE bundle offline against trusted identities and a trusted root.

    Checks, in order: ``keyless.bundle`` (the bundle parses and carries a DSSE envelope),
    ``keyless.identity`` (its certificate names one of ``identities`` with that
    identity's issuer), ``keyless.signature`` (sigstore-python's ``verify_dsse``: chain
    to the Fulcio root at a verified time, SCT, Rekor inclusion proof and checkpoint,
    DSSE signature, log entry consistent with the envelope).

    Returns:
        The matched identity and the verified payload and signature.

    Raises:
        KeylessVerificationError: the first check that failed, with its reason.
        ConfigurationError: the trusted root cannot be loaded.
    """
    payload_type, payload, signature = bundle_envelope(bundle_json)
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify.policy import Identity

    # 1. keyless.bundle
    try:
        bundle = Bundle.from_json(bundle_json)
        certificate = bundle.signing_certificate
    except (SigstoreError, ValueError) as exc:
        raise KeylessVerificationError(
            "keyless.bundle", f"not a valid Sigstore bundle: {_one_line(exc)}"
        ) from None
    # 2. keyless.identity: named precisely here, before any cryptography
    names, issuer = certificate_identity(certificate)
    if not identities:
        raise KeylessVerificationError(
            "keyless.identity", "the trust policy names no keyless identity"
        )
    matched = [i for i in identities if i.identity in names]
    if not matched:
        raise KeylessVerificationError(
            "keyless.identity",
            f"certificate identity {', '.join(names) or '(none)'} is not trusted "
            f"(trusted: {', '.join(i.identity for i in identities)})",
        )
    chosen = next((i for i in matched if i.issuer == issuer), None)
    if chosen is None:
        raise KeylessVerificationError(
            "keyless.identity",
            f"certificate issuer {issuer or '(none)'} is not the trusted issuer "
            f"{matched[0].issuer} of {matched[0].identity}",
        )
    # 3. keyless.signature
    verifier = _verifier(root)
    try:
        verified_type, verified_payload = verifier.verify_dsse(
            bundle, Identity(identity=chosen.identity, issuer=chosen.issuer)
        )
    except (SigstoreError, ValueError) as exc:
        raise KeylessVerificationError(
            "keyless.signature",
            f"bundle does not verify against the Sigstore trusted root: {_one_line(exc)}",
        ) from None
    if verified_type != payload_type or verified_payload != payload:
        raise KeylessVerificationError(  # pragma: no cover - same JSON, parsed twice
            "keyless.bundle", "verified payload differs from the bundle's envelope"
        )
    return VerifiedKeyless(
        chosen.name,
        chosen.identity,
        chosen.issuer,
        payload_type,
        payload,
        signature,
        str(bundle.to_json()),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())[:400]


# ---------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class KeylessSignature:
    """A record signed keylessly: the DSSE pieces and the bundle to store beside them."""

    payload: bytes
    signature: bytes
    bundle: bytes
    identity: str


class KeylessSigner:
    """Signs records with Sigstore, from an ambient OIDC identity token.

    Build it with :meth:`from_environment`, which fails at once (before anything is
    written) when no token is available.
    """

    def __init__(self, token: str, *, instance: str = "production") -> None:
        if instance not in INSTANCES:
            raise ConfigurationError(f"unknown Sigstore instance {instance!r}")
        self._token = token
        self.instance = instance

    @classmethod
    def from_environment(cls, *, instance: str = "production") -> KeylessSigner:
        """Detect the ambient OIDC token (GitHub Actions, GitLab, Buildkite, CircleCI, GCP).

        Raises:
            SigningError: no token: keyless signing cannot work here (exit 3).
        """
        from sigstore.oidc import detect_credential

        hint = (
            "keyless signing needs an ambient OIDC token: run in CI with one, e.g. a GitHub "
            "Actions job with 'permissions: id-token: write'"
        )
        try:
            token = detect_credential()
        except Exception as exc:  # sigstore's IdentityError and friends
            raise SigningError(f"{hint} ({_one_line(exc)})") from exc
        if not token:
            raise SigningError(f"{hint}; none was found in this environment")
        return cls(token, instance=instance)

    @property
    def label(self) -> str:
        """How commit trailers name this signer."""
        return f"sigstore:{self.instance}"

    def sign_statement(self, payload: bytes) -> KeylessSignature:
        """Sign canonical Statement bytes; return the envelope pieces and the bundle.

        Raises:
            SigningError: Fulcio, Rekor or the token failed, or the bundle is not usable.
        """
        try:
            bundle_json = self._sigstore_bundle(payload).encode()
        except SigningError:
            raise
        except Exception as exc:  # network and service failures of every kind
            raise SigningError(f"Sigstore signing failed: {_one_line(exc)}") from exc
        try:
            payload_type, signed_payload, signature = bundle_envelope(bundle_json)
        except KeylessVerificationError as exc:
            raise SigningError(f"Sigstore returned an unusable bundle: {exc.message}") from exc
        if signed_payload != payload or payload_type != "application/vnd.in-toto+json":
            raise SigningError("Sigstore signed something other than this record's statement")
        from cryptography import x509

        try:
            raw = json.loads(bundle_json)["verificationMaterial"]["certificate"]["rawBytes"]
            names, _ = certificate_identity(x509.load_der_x509_certificate(base64.b64decode(raw)))
        except (KeyError, ValueError, TypeError):
            names = []
        return KeylessSignature(payload, signature, bundle_json, names[0] if names else "")

    def _sigstore_bundle(self, payload: bytes) -> str:
        # Network: Fulcio (certificate) and Rekor (log entry). Tests replace only this.
        from sigstore import dsse
        from sigstore.models import ClientTrustConfig
        from sigstore.oidc import IdentityToken
        from sigstore.sign import SigningContext

        config = (
            ClientTrustConfig.staging() if self.instance == "staging" else ClientTrustConfig.production()
        )
        context = SigningContext.from_trust_config(config)
        with context.signer(IdentityToken(self._token), cache=True) as signer:
            return str(signer.sign_dsse(dsse.Statement(payload)).to_json())
