"""RFC 3161 time-stamps over DSSE signatures: requesting them, and verifying them offline.

What is time-stamped is the raw (base64-decoded) DSSE signature: the token's message
imprint is ``SHA-256(signature)``. A token proves the signature, and so the record, existed
at the token's time. Tokens are kept as complete DER ``TimeStampResp`` structures (the
``.tsr`` files beside each envelope), which is what ``openssl ts -verify -in X.tsr``
reads, so an auditor can check them without AFDP::

    openssl ts -verify -digest <sha256 hex of signature> -in timestamp-0.tsr \\
        -CAfile tsa-root.pem -untrusted tsa.pem

Building requests, parsing responses and checking the CMS signature and chain is
rfc3161-client's work; this package adds failover across TSAs and AFDP's precise errors.

The package, by concern: :mod:`.request` (asking TSAs over HTTP, the kept-alive
client), :mod:`.verify` (the offline checks), :mod:`.chains` (the warm path: chains
and verifiers this process already validated; it reads tokens with rfc3161-client and
asn1crypto) and :mod:`.tokens` (the token, the verified result, the error, TSA root
certificates).
"""

from __future__ import annotations

from afdp.evidence.timestamp.request import request_timestamp
from afdp.evidence.timestamp.tokens import (
    TimestampToken,
    TimestampVerificationError,
    VerifiedTimestamp,
    load_certificates,
)
from afdp.evidence.timestamp.verify import encoding_problem, verify_timestamp

__all__ = [
    "TimestampToken",
    "TimestampVerificationError",
    "VerifiedTimestamp",
    "encoding_problem",
    "load_certificates",
    "request_timestamp",
    "verify_timestamp",
]
