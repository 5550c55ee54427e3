"""What a time-stamp is to AFDP: the token a TSA gave, what verifying one established,
the error a failed check raises, and reading TSA root certificates.

Shared by :mod:`.request` (asking TSAs) and :mod:`.verify` (checking tokens offline).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import rfc3161_client
from cryptography import x509

from afdp.errors import ConfigurationError, VerificationError

_SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")


class TimestampVerificationError(VerificationError):
    """A time-stamp token failed one verification check.

    ``check`` names the check: ``timestamp.parse``, ``timestamp.status``,
    ``timestamp.hash``, ``timestamp.imprint`` or ``timestamp.chain``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message

    def diagnostics(self) -> str:
        """Return ``"<check>: <reason>"`` on one line."""
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class TimestampToken:
    """A time-stamp obtained from a TSA.

    ``der`` is the complete DER TimeStampResp (status + token), ``url`` the TSA that
    issued it and ``gen_time`` its (aware, UTC) genTime.
    """

    der: bytes
    url: str
    gen_time: dt.datetime


@dataclass(frozen=True)
class VerifiedTimestamp:
    """What :func:`verify_timestamp` established about one token."""

    gen_time: dt.datetime  # aware, UTC
    tsa_name: str  # RFC 4514 subject of the certificate that signed the token
    serial_number: int
    policy_oid: str
    digest_hex: str  # the SHA-256 message imprint: sha256(signature)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the transport said


def _status_text(response: rfc3161_client.TimeStampResponse) -> str:
    try:
        status = rfc3161_client.PKIStatus(response.status).name.lower()
    except ValueError:
        status = str(response.status)
    text = " ".join("; ".join(response.status_string).split())
    return f"status {status}: {text}" if text else f"status {status}"


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def load_certificates(pem_bytes: bytes) -> list[x509.Certificate]:
    """Parse one or more PEM certificates (e.g. a TSA root file).

    Returns:
        The certificates, in file order.

    Raises:
        ConfigurationError: no certificate in the data, or one that does not parse.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem_bytes)
    except ValueError as exc:
        raise ConfigurationError(f"not PEM X.509 certificates: {_short(exc)}") from exc
    if not certificates:  # pragma: no cover - cryptography raises on empty input
        raise ConfigurationError("no PEM certificate found")
    return certificates
