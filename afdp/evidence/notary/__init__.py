"""AFDP's embedded RFC 3161 time-stamping authority (TSA).

This TSA is for development and air-gapped teams; it is not a public trust anchor. Its
tokens prove *when* a signature existed only to auditors who chose to trust its root
(``afdp trust init --tsa-root root.pem``); anyone else should use one or more public
TSAs (see ``notary/README.md``).

A TSA folder holds three files written by :func:`init_tsa`:

- ``root.pem``: a self-signed ECDSA P-256 root CA certificate; auditors pin this one.
- ``tsa.pem``: the TSA's signing certificate (RSA-2048), issued by the root, with the
  critical ``timeStamping`` extended key usage that RFC 3161 section 2.3 requires.
- ``key.pem``: the TSA's private key (PKCS#8 PEM, mode 0600).

The root's private key is discarded as soon as it has issued ``tsa.pem``: nobody can
later mint a second TSA certificate under the same root, so a stolen ``key.pem`` is the
only way to forge tokens and rotating it means a new root that auditors pin knowingly.

Responses are produced by pyHanko's maintained ``DummyTimeStamper``; the subclass here
only fixes what a long-running service needs (key loaded once, UTC time, AFDP's policy
OID, RFC-conforming rejections, ``certReq`` honoured, thread safety).

The package: :mod:`.files` (the TSA folder), :mod:`.responder` (one request, one
token) and :mod:`.server` (HTTP).
"""

from __future__ import annotations

from afdp.evidence.notary.files import DEV_TSA_WARNING, POLICY_OID, TsaFiles, init_tsa
from afdp.evidence.notary.responder import EmbeddedTSA
from afdp.evidence.notary.server import MAX_REQUEST_BYTES, TsaServer, serve

__all__ = [
    "DEV_TSA_WARNING",
    "MAX_REQUEST_BYTES",
    "POLICY_OID",
    "EmbeddedTSA",
    "TsaFiles",
    "TsaServer",
    "init_tsa",
    "serve",
]
