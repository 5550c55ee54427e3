"""Asking TSAs for a time-stamp over HTTP: failover across URLs, and one kept-alive client.

The process keeps one HTTP client (keep-alive connections make a round trip to a nearby
TSA a fraction of a millisecond); a forked child starts without the parent's sockets,
and a kept-alive connection the TSA dropped as a request went out is asked again once,
on a new connection. httpx is imported on first use: verification never needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import rfc3161_client
from cryptography import x509

from afdp.errors import TimestampError, UsageError
from afdp.evidence.perprocess import PerProcess
from afdp.evidence.timestamp.chains import _verifier
from afdp.evidence.timestamp.tokens import _SHA256_OID, TimestampToken, _short, _status_text, _utc

if TYPE_CHECKING:
    import httpx

_QUERY_HEADERS = {"Content-Type": "application/timestamp-query"}
# A real TimeStampResp is a few KiB; refuse to buffer a runaway answer.
_MAX_RESPONSE_BYTES = 1024 * 1024


def _new_client() -> httpx.Client:
    import httpx

    from afdp.deadline import with_deadlines

    return with_deadlines(
        httpx.Client(
            http2=False,
            follow_redirects=False,
            trust_env=True,
            limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=30.0),
            headers={"User-Agent": "afdp"},
        )
    )


#: One client for the process: keep-alive connections make a round trip to a nearby TSA
#: a fraction of a millisecond instead of a TCP handshake each time (a forked child makes
#: its own: two processes writing requests on one TCP stream interleave them).
_client = PerProcess(_new_client)


def _http() -> httpx.Client:
    return _client.get()


#: Ports on which a TSA of this very process listens (:func:`afdp.evidence.notary.serve`
#: adds and removes them). Its answers take this interpreter's lock, as the writer's own
#: work does: a writer gains nothing by overlapping the two (see :func:`served_here`).
_PORTS_SERVED_HERE: set[int] = set()


def serving_here(port: int, serving: bool) -> None:
    """Record that a TSA of this process starts (``serving``) or stops listening on ``port``."""
    if serving:
        _PORTS_SERVED_HERE.add(port)
    else:
        _PORTS_SERVED_HERE.discard(port)


def served_here(url: str) -> bool:
    """Return True when ``url`` may be answered by a TSA running in this process (its port
    is one such a TSA listens on). Only a hint for scheduling work, never for trust: a
    wrong answer costs time, not correctness."""
    if not _PORTS_SERVED_HERE:
        return False
    from urllib.parse import urlsplit

    try:
        port = urlsplit(url).port
    except ValueError:
        return False
    return port in _PORTS_SERVED_HERE


def request_timestamp(
    signature: bytes,
    urls: Sequence[str],
    *,
    timeout: float = 10.0,
    roots: Sequence[x509.Certificate] | None = None,
) -> TimestampToken:
    """Get an RFC 3161 token over ``SHA-256(signature)`` from the first TSA that gives one.

    The URLs are tried in order. A TSA is skipped when it is unreachable, times out,
    answers an HTTP error or something that is not a granted time-stamp response, or
    a token over another message or with another nonce; with ``roots``, also when the
    token does not verify against them.

    Returns:
        The token (full DER TimeStampResp), the URL that issued it and its genTime.

    Raises:
        UsageError: no URL was given, or ``signature`` is empty.
        TimestampError: no TSA gave a valid token; the message names every URL and why.
    """
    if not urls:
        raise UsageError("no TSA URL given: at least one is needed to time-stamp")
    if not signature:
        raise UsageError("cannot time-stamp an empty signature")
    request = (
        rfc3161_client.TimestampRequestBuilder()
        .data(signature)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
    ).build()
    body = request.as_bytes()
    expected = hashlib.sha256(signature).digest()
    reasons: list[str] = []
    for url in urls:
        try:
            response, der = _ask(url, body, timeout)
            _check_answer(response, expected, request.nonce, roots)
        except _Skip as skip:
            reasons.append(f"{url} ({skip})")
            continue
        return TimestampToken(der=der, url=url, gen_time=_utc(response.tst_info.gen_time))
    raise TimestampError("no TSA gave a valid time-stamp token: " + "; ".join(reasons))


class _Skip(Exception):
    """This TSA gave no usable token; the message says why."""


def _ask(url: str, body: bytes, timeout: float) -> tuple[rfc3161_client.TimeStampResponse, bytes]:
    import httpx

    from afdp.deadline import deadline

    try:
        # ``timeout`` is each TSA's deadline for the whole exchange (connect to last
        # byte), not a bound on each read: a TSA dribbling its answer cannot hold us.
        with deadline(timeout):
            try:
                reply = _http().post(url, content=body, headers=_QUERY_HEADERS, timeout=timeout)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                # A kept-alive connection can be closed by the TSA (its idle timeout, a
                # restart, a proxy) just as the request goes out on it; the request never
                # reached an answer. Asking again is safe (a time-stamp request changes
                # nothing) and is done once, on a new connection, within the same deadline.
                with _new_client() as fresh:
                    reply = fresh.post(url, content=body, headers=_QUERY_HEADERS, timeout=timeout)
    except httpx.TimeoutException:
        raise _Skip(f"no whole answer within {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise _Skip(f"cannot connect: {_short(exc)}") from None
    except httpx.HTTPError as exc:
        raise _Skip(f"HTTP failure: {_short(exc)}") from None
    except (httpx.InvalidURL, ValueError) as exc:
        raise _Skip(f"bad URL: {_short(exc)}") from None
    if reply.status_code != 200:
        raise _Skip(f"HTTP {reply.status_code} {reply.reason_phrase}".rstrip())
    der = reply.content
    if len(der) > _MAX_RESPONSE_BYTES:
        raise _Skip(f"answer of {len(der)} bytes is too large for a time-stamp response")
    try:
        response = rfc3161_client.decode_timestamp_response(der)
    except ValueError:
        kind = reply.headers.get("Content-Type", "no content type")
        raise _Skip(f"answered {kind}, not a time-stamp response") from None
    return response, der


def _check_answer(
    response: rfc3161_client.TimeStampResponse,
    expected: bytes,
    nonce: int | None,
    roots: Sequence[x509.Certificate] | None,
) -> None:
    if response.status != rfc3161_client.PKIStatus.GRANTED:
        raise _Skip(_status_text(response))
    try:
        info = response.tst_info
        imprint = info.message_imprint
        algorithm, message, token_nonce = imprint.hash_algorithm, imprint.message, info.nonce
    except ValueError:
        raise _Skip("granted response without a readable token") from None
    if algorithm != _SHA256_OID or message != expected:
        raise _Skip(f"token is over a different message (imprint {message.hex()[:16]}…)")
    # The nonce ties the answer to this request: a replayed or cached token fails here.
    if token_nonce != nonce:
        raise _Skip("nonce in the token does not match the request")
    if roots is not None:
        try:
            _verifier(roots).verify(response, expected)
        except (rfc3161_client.VerificationError, ValueError) as exc:
            raise _Skip(f"token does not verify against the given TSA roots: {exc}") from None
