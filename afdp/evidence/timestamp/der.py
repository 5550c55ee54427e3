"""A minimal DER reader for time-stamp tokens (asn1crypto's element reading, in place): the
elements, tags and object identifiers the warm verification path (:mod:`.chains`) reads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


class _Element(NamedTuple):
    """One DER element: its class, whether constructed, tag, and header + content bytes.

    A tuple (immutable, and cheap to make: a token has about 40 elements and a verify
    run reads one token per record)."""

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
        end = len(data)
        while at < end:
            element, at = _read_element(data, at)
            out.append(element)
        return out

    def expect(self, klass: int, tag: int) -> _Element:
        if self.klass != klass or self.tag != tag:
            raise ValueError("unexpected element")
        return self


def _read_element(data: bytes, at: int) -> tuple[_Element, int]:
    """Read the DER element at ``data[at:]``; return it and where the next one starts.

    The same reading as asn1crypto's ``parser.parse`` (identifier octets with the
    high-tag-number form and its minimal-encoding check, short and long definite
    lengths, ValueError when the data is shorter than an element says), read in place
    rather than from a copy of the rest of the data: a token's elements are read at
    their offsets. An indefinite length (not DER) raises ValueError.
    ``tests/test_verify_speed_caches.py`` checks it against asn1crypto's parser.
    """
    end = len(data)
    if at >= end:
        raise ValueError("insufficient data")
    first = data[at]
    pointer = at + 1
    tag = first & 31
    if tag == 31:  # high tag number: base 128, minimal
        tag = 0
        while True:
            if pointer >= end:
                raise ValueError("insufficient data")
            octet = data[pointer]
            pointer += 1
            if octet == 0x80 and tag == 0:
                raise ValueError("non-minimal tag encoding")
            tag = tag * 128 + (octet & 127)
            if octet < 0x80:
                break
        if tag < 31:
            raise ValueError("non-minimal tag encoding")
    if pointer >= end:
        raise ValueError("insufficient data")
    length = data[pointer]
    pointer += 1
    if length & 0x80:
        count = length & 127
        if not count:  # indefinite length: not DER
            raise ValueError("not DER")
        if pointer + count > end:
            raise ValueError("insufficient data")
        length = int.from_bytes(data[pointer : pointer + count], "big")
        pointer += count
    stop = pointer + length
    if stop > end:
        raise ValueError("insufficient data")
    return _Element(first >> 6, bool(first & 0x20), tag, data[at:pointer], data[pointer:stop]), stop
