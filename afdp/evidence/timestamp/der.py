"""A minimal DER reader for time-stamp tokens (asn1crypto's parser underneath): the
elements, tags and object identifiers the warm verification path (:mod:`.chains`) reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asn1crypto import parser as _der
from cryptography.hazmat.primitives import hashes


def _oid(dotted: str) -> bytes:
    """The DER content octets of an OBJECT IDENTIFIER."""
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out.extend(reversed(chunk))
    return bytes(out)


_SIGNED_DATA_OID = _oid("1.2.840.113549.1.7.2")
_TST_INFO_OID = _oid("1.2.840.113549.1.9.16.1.4")
_CONTENT_TYPE_ATTR = _oid("1.2.840.113549.1.9.3")
_MESSAGE_DIGEST_ATTR = _oid("1.2.840.113549.1.9.4")
_SHA256, _SHA384, _SHA512 = (_oid(f"2.16.840.1.101.3.4.2.{n}") for n in (1, 2, 3))
_DIGESTS: dict[bytes, Any] = {_SHA256: hashes.SHA256, _SHA384: hashes.SHA384, _SHA512: hashes.SHA512}
#: signature algorithm -> (key type, the digest it fixes, or None: the SignerInfo's digest)
_SIGNATURE_ALGORITHMS: dict[bytes, tuple[str, bytes | None]] = {
    _oid("1.2.840.113549.1.1.1"): ("rsa", None),  # rsaEncryption: PKCS #1 v1.5
    _oid("1.2.840.113549.1.1.11"): ("rsa", _SHA256),
    _oid("1.2.840.113549.1.1.12"): ("rsa", _SHA384),
    _oid("1.2.840.113549.1.1.13"): ("rsa", _SHA512),
    _oid("1.2.840.10045.4.3.2"): ("ec", _SHA256),
    _oid("1.2.840.10045.4.3.3"): ("ec", _SHA384),
    _oid("1.2.840.10045.4.3.4"): ("ec", _SHA512),
}
_UNIVERSAL, _CONTEXT = 0, 2
_OCTET_STRING, _OID_TAG, _SEQUENCE_TAG, _SET_TAG = 4, 6, 16, 17


@dataclass(frozen=True)
class _Element:
    """One DER element: its class, whether constructed, tag, and header + content bytes."""

    klass: int
    constructed: bool
    tag: int
    header: bytes
    contents: bytes

    @property
    def encoded(self) -> bytes:
        return self.header + self.contents

    def children(self) -> list[_Element]:
        out, data, at = [], self.contents, 0
        while at < len(data):
            element, at = _read_element(data, at)
            out.append(element)
        return out

    def expect(self, klass: int, tag: int) -> _Element:
        if (self.klass, self.tag) != (klass, tag):
            raise ValueError("unexpected element")
        return self


def _read_element(data: bytes, at: int) -> tuple[_Element, int]:
    """Read the DER element at ``data[at:]`` with asn1crypto's parser; return it and where
    the next one starts. An indefinite length (not DER) raises ValueError."""
    klass, method, tag, header, contents, trailer = _der.parse(data[at:])
    if trailer:  # indefinite length: not DER
        raise ValueError("not DER")
    return _Element(klass, method == 1, tag, header, contents), at + len(header) + len(contents)
