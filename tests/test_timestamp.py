"""Time-stamp tokens (afdp/evidence/timestamp/): requesting them and each verification check.

Every check of :func:`verify_timestamp` gets its own negative test, with a real token
bent in exactly one way (the pattern of rfc3161-client's own tests): parse, status,
hash algorithm, imprint, chain (unknown root, no roots, bad CMS signature, no
certificate, a TSA certificate without the timeStamping usage). The nonce is checked
when a token is requested (a stored token's nonce ties it to a request nobody can
replay later); replayed, foreign and rejected answers are tested against real HTTP
servers on loopback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rfc3161_client
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from afdp.errors import ConfigurationError, TimestampError, UsageError
from afdp.evidence.notary import POLICY_OID, EmbeddedTSA
from afdp.evidence.timestamp import (
    TimestampVerificationError,
    load_certificates,
    request_timestamp,
    verify_timestamp,
)

SIGNATURE = b"\x30\x45" + bytes(range(69))  # any bytes: what is stamped is sha256 of them


def roots_of(directory: Path) -> list[x509.Certificate]:
    return load_certificates((directory / "root.pem").read_bytes())


def raw_request(data: bytes, *, algorithm=rfc3161_client.HashAlgorithm.SHA256, cert_req: bool = True) -> bytes:
    return (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(algorithm)
        .nonce(nonce=True)
        .cert_request(cert_request=cert_req)
        .build()
        .as_bytes()
    )


@pytest.fixture(scope="module")
def embedded(tsa) -> EmbeddedTSA:
    return EmbeddedTSA.load(tsa.directory)


def expect(check: str, token: bytes, signature: bytes, roots, match: str) -> None:
    with pytest.raises(TimestampVerificationError, match=match) as caught:
        verify_timestamp(token, signature, roots)
    assert caught.value.check == check
    assert caught.value.exit_code == 1
    assert caught.value.diagnostics().startswith(f"{check}: ")


def test_token_from_the_embedded_tsa_verifies(tsa):
    token = request_timestamp(SIGNATURE, [tsa.url])
    verified = verify_timestamp(token.der, SIGNATURE, roots_of(tsa.directory))
    assert verified.digest_hex == hashlib.sha256(SIGNATURE).hexdigest()
    assert verified.policy_oid == POLICY_OID
    assert "AFDP development TSA" in verified.tsa_name
    assert verified.gen_time == token.gen_time
    assert abs(verified.gen_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


# -- 1. parse -----------------------------------------------------------------------------
def test_parse_garbage(tsa):
    expect("timestamp.parse", b"not DER at all", SIGNATURE, roots_of(tsa.directory), "not a DER")


def test_parse_truncated_token(tsa):
    token = request_timestamp(SIGNATURE, [tsa.url]).der
    expect("timestamp.parse", token[: len(token) // 2], SIGNATURE, roots_of(tsa.directory), "not a DER")


# -- 2. status ----------------------------------------------------------------------------
def test_status_rejection(tsa, embedded):
    rejection = embedded.respond(b"garbage request")
    expect("timestamp.status", rejection, SIGNATURE, roots_of(tsa.directory), "did not grant.*rejection")


# -- 3. hash algorithm --------------------------------------------------------------------
def test_hash_other_than_sha256(tsa, embedded):
    token = embedded.respond(raw_request(SIGNATURE, algorithm=rfc3161_client.HashAlgorithm.SHA512))
    assert rfc3161_client.decode_timestamp_response(token).status == rfc3161_client.PKIStatus.GRANTED
    expect("timestamp.hash", token, SIGNATURE, roots_of(tsa.directory), "SHA-512; AFDP requires SHA-256")


# -- 4. imprint ---------------------------------------------------------------------------
def test_imprint_of_another_signature(tsa):
    token = request_timestamp(b"another signature", [tsa.url]).der
    expect("timestamp.imprint", token, SIGNATURE, roots_of(tsa.directory), "different signature")


# -- 5. chain -----------------------------------------------------------------------------
def test_chain_untrusted_root(tsa, other_tsa):
    token = request_timestamp(SIGNATURE, [tsa.url]).der
    expect("timestamp.chain", token, SIGNATURE, roots_of(other_tsa.directory), "not signed by a TSA chained")


def test_chain_no_roots(tsa):
    token = request_timestamp(SIGNATURE, [tsa.url]).der
    expect("timestamp.chain", token, SIGNATURE, [], "no trusted TSA roots")


def test_chain_bad_cms_signature(tsa):
    token = request_timestamp(SIGNATURE, [tsa.url]).der
    response = tsp.TimeStampResp.load(token)
    signature = response["time_stamp_token"]["content"]["signer_infos"][0]["signature"].native
    assert token.count(signature) == 1
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    expect("timestamp.chain", token.replace(signature, flipped), SIGNATURE, roots_of(tsa.directory), "not signed by a TSA chained")


def test_chain_token_without_certificate(tsa, embedded):
    token = embedded.respond(raw_request(SIGNATURE, cert_req=False))
    expect("timestamp.chain", token, SIGNATURE, roots_of(tsa.directory), "not signed by a TSA chained")


def test_chain_tsa_certificate_without_timestamping_usage():
    # A CA of the test's own, issuing a TSA certificate that lacks the critical
    # timeStamping EKU (EmbeddedTSA.load refuses such a folder, so it is built directly).
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no eku")]))
        .issuer_name(name).public_key(tsa_key.public_key()).serial_number(2)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    token = EmbeddedTSA(cert, tsa_key).respond(raw_request(SIGNATURE))
    expect("timestamp.chain", token, SIGNATURE, [root], "unsuitable certificate purpose")


# -- requesting: nonce, foreign and rejected answers, failover ------------------------------
@pytest.fixture()
def fake_tsa() -> Iterator[Callable[[Callable[[bytes], bytes]], str]]:
    """Real HTTP servers on loopback whose answer is computed by a given function."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Callable[[bytes], bytes]) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = answer(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_replayed_token_fails_the_nonce_check(tsa, fake_tsa):
    stale = request_timestamp(SIGNATURE, [tsa.url]).der  # right message, old request's nonce
    url = fake_tsa(lambda _request: stale)
    with pytest.raises(TimestampError, match="nonce in the token does not match"):
        request_timestamp(SIGNATURE, [url])


def test_token_for_another_message_is_refused(tsa, embedded, fake_tsa):
    url = fake_tsa(lambda _request: embedded.respond(raw_request(b"something else")))
    with pytest.raises(TimestampError, match="different message"):
        request_timestamp(SIGNATURE, [url])


def test_rejection_is_reported_with_its_status(embedded, fake_tsa):
    url = fake_tsa(lambda _request: embedded.respond(b"garbage"))
    with pytest.raises(TimestampError, match="status rejection"):
        request_timestamp(SIGNATURE, [url])


def test_roots_given_at_request_time_are_enforced(tsa, other_tsa):
    with pytest.raises(TimestampError, match="does not verify against the given TSA roots"):
        request_timestamp(SIGNATURE, [tsa.url], roots=roots_of(other_tsa.directory))
    token = request_timestamp(SIGNATURE, [tsa.url], roots=roots_of(tsa.directory))
    assert token.url == tsa.url


def test_failover_skips_bad_answers_and_names_every_failure(tsa, embedded, fake_tsa):
    bad = fake_tsa(lambda _request: b"<html>")
    token = request_timestamp(SIGNATURE, [bad, tsa.url])
    assert token.url == tsa.url
    with pytest.raises(TimestampError) as caught:
        request_timestamp(SIGNATURE, [bad, "http://127.0.0.1:9/"], timeout=2)
    assert bad in str(caught.value) and "127.0.0.1:9" in str(caught.value)
    assert caught.value.exit_code == 3


def test_request_usage_errors():
    with pytest.raises(UsageError):
        request_timestamp(SIGNATURE, [])
    with pytest.raises(UsageError):
        request_timestamp(b"", ["http://127.0.0.1:9/"])


def test_load_certificates_refuses_garbage():
    with pytest.raises(ConfigurationError, match="not PEM"):
        load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# -- the remembered leaf-certificate checks (timestamp.chains._caching_verifier) -----------
def test_verifier_remembers_leaf_checks_but_checks_every_signature_and_chain(tsa, other_tsa):
    from afdp.evidence.timestamp import chains

    roots = roots_of(tsa.directory)
    verifier = chains._verifier(roots)
    assert type(verifier).__name__ == "_CachingVerifier"  # the cached path is the one tested
    token = request_timestamp(SIGNATURE, [tsa.url]).der
    verify_timestamp(token, SIGNATURE, roots)
    assert verifier._passed  # the leaf check of this TSA's certificate set passed once
    # with that pass remembered: a bad CMS signature under the same certificates fails,
    response = tsp.TimeStampResp.load(token)
    signature = response["time_stamp_token"]["content"]["signer_infos"][0]["signature"].native
    bent = token.replace(signature, bytes([signature[0] ^ 0x01]) + signature[1:])
    expect("timestamp.chain", bent, SIGNATURE, roots, "not signed by a TSA chained")
    # a token of another TSA fails its chain,
    foreign = request_timestamp(SIGNATURE, [other_tsa.url]).der
    expect("timestamp.chain", foreign, SIGNATURE, roots, "not signed by a TSA chained")
    # and a token over another signature fails its imprint
    expect("timestamp.imprint", token, b"another signature", roots, "different signature")


def test_remembered_leaf_check_does_not_cover_another_certificate_of_the_same_root():
    """A root whose good TSA's tokens passed: a second certificate it issued with a
    non-critical timeStamping usage still fails (the pass is remembered per certificate set)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root 2")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )

    def tsa_cert(serial: int, usage, critical: bool):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tsa {serial}")]))
            .issuer_name(name).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=critical)
            .sign(root_key, hashes.SHA256())
        )
        return EmbeddedTSA(cert, key)

    good = tsa_cert(2, ExtendedKeyUsageOID.TIME_STAMPING, True)
    verify_timestamp(good.respond(raw_request(SIGNATURE)), SIGNATURE, [root])
    lax = tsa_cert(3, ExtendedKeyUsageOID.TIME_STAMPING, False)  # EKU present, not critical
    expect("timestamp.chain", lax.respond(raw_request(SIGNATURE)), SIGNATURE, [root], "certificate purpose")
    verify_timestamp(good.respond(raw_request(SIGNATURE)), SIGNATURE, [root])
    expect("timestamp.chain", lax.respond(raw_request(SIGNATURE)), SIGNATURE, [root], "certificate purpose")
    # and the good TSA's token without its certificate fails in the leaf check itself
    expect("timestamp.chain", good.respond(raw_request(SIGNATURE, cert_req=False)), SIGNATURE, [root], "not signed by")


# -- kept-alive connections the TSA has dropped ---------------------------------------------
@pytest.fixture()
def dropping_tsa(embedded) -> Iterator[Callable[[int], tuple[str, list[int]]]]:
    """A real HTTP/1.1 TSA that answers ``per_connection`` requests on a connection with
    keep-alive, then closes that connection without answering the next one: what a TSA,
    or a proxy in front of it, does when its idle timeout fires as a request arrives."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(per_connection: int) -> tuple[str, list[int]]:
        answered: list[int] = []  # requests answered, by connection (in order of connection)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                self.index = len(answered)
                answered.append(0)

            def do_POST(self):  # noqa: N802 - http.server's naming
                if answered[self.index] >= per_connection:
                    self.close_connection = True  # drop it: no status line, nothing
                    return
                body = embedded.respond(self.rfile.read(int(self.headers["Content-Length"])))
                answered[self.index] += 1  # counted before the client can see the answer
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", answered

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_kept_alive_connection_dropped_by_the_tsa_is_asked_again_on_a_new_one(tsa, dropping_tsa):
    url, answered = dropping_tsa(1)
    first = request_timestamp(SIGNATURE, [url])
    # The second request goes out on the kept-alive connection, which the TSA drops.
    second = request_timestamp(SIGNATURE, [url])
    verify_timestamp(first.der, SIGNATURE, roots_of(tsa.directory))
    verify_timestamp(second.der, SIGNATURE, roots_of(tsa.directory))
    assert answered[:2] == [1, 1], answered  # the retry went out on a connection of its own


def test_a_tsa_that_drops_every_request_is_asked_once_more_then_skipped(dropping_tsa, tsa):
    url, answered = dropping_tsa(0)
    with pytest.raises(TimestampError) as caught:
        request_timestamp(SIGNATURE, [url], timeout=5)
    message = str(caught.value)
    assert "\n" not in message and url in message and "disconnected" in message
    assert len(answered) == 2 and answered == [0, 0]  # one retry, not a loop
    # failover still goes on to the next TSA
    assert request_timestamp(SIGNATURE, [url, tsa.url]).url == tsa.url


def test_the_kept_alive_client_reconnects_to_a_tsa_restarted_on_its_port(tsa, embedded):
    from afdp.evidence.notary import serve
    from afdp.evidence.timestamp import request as tsa_request

    with serve(embedded, host="127.0.0.1", port=0) as first:
        url, port = first.url, first.port
        assert request_timestamp(SIGNATURE, [url]).url == url
        connections = len(first._httpd._connections)  # noqa: SLF001 - the kept-alive one
        assert connections == 1
    # The connection the client keeps alive died with the first server; the TSA comes
    # back on the same port. The next request is answered, on a new connection.
    with serve(embedded, host="127.0.0.1", port=port) as again:
        token = request_timestamp(SIGNATURE, [url])
        verify_timestamp(token.der, SIGNATURE, roots_of(tsa.directory))
        assert token.url == url == again.url
    assert tsa_request._client is not None  # noqa: SLF001 - still the one kept-alive client


def test_a_forked_child_does_not_share_the_parents_kept_alive_connections(tsa):
    import os

    from afdp.evidence.timestamp import request

    request_timestamp(SIGNATURE, [tsa.url])
    parent_client = request._http()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports whether it was handed the parent's client
        try:
            os.write(write, b"shared" if request._client is parent_client else b"own")
            request_timestamp(SIGNATURE, [tsa.url])
            os.write(write, b" ok")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read() == b"own ok"
    assert request._http() is parent_client
    request_timestamp(SIGNATURE, [tsa.url])  # the parent's connection still works
