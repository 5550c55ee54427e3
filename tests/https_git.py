"""A real Git smart-HTTP server over TLS on loopback, for the central evidence remote.

``git http-backend`` (shipped with git) runs as a CGI program behind a small TLS server
(Python's ``http.server`` in a thread, ``ssl`` with a certificate from a throw-away CA
made here with ``cryptography``). It is the set-up of ``git help http-backend`` (Apache
``ScriptAlias`` + ``SetEnv GIT_PROJECT_ROOT`` + ``GIT_HTTP_EXPORT_ALL``, Basic auth on
``git-receive-pack``), with this server in Apache's place:

- the CGI environment http-backend reads: ``GIT_PROJECT_ROOT``, ``GIT_HTTP_EXPORT_ALL``,
  ``PATH_INFO``, ``QUERY_STRING``, ``REQUEST_METHOD``, ``CONTENT_TYPE``,
  ``CONTENT_LENGTH``, ``REMOTE_USER`` (set only after Basic auth succeeded: without it
  http-backend refuses to receive a push), ``HTTP_CONTENT_ENCODING`` (git gzips large
  fetch negotiations) and ``HTTP_GIT_PROTOCOL`` (protocol v2);
- a chunked request body (git sends pushes larger than ``http.postBuffer`` chunked) is
  de-chunked before it reaches the CGI;
- HTTP Basic auth is required for pushes (``service=git-receive-pack`` and
  ``/git-receive-pack``), and for everything when ``private`` is set; a missing or wrong
  password is a 401 with ``WWW-Authenticate``, as a web server answers.

Every request is logged (method, path, query, user, status) so tests can assert what
reached the server, e.g. that no push was received.

Outside pytest, :func:`serve_git_https` is a context manager; ``tests/infra.py`` wraps
it in the ``https_git`` fixture.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import ipaddress
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass(frozen=True)
class Certificates:
    """A CA and a server certificate for ``127.0.0.1`` / ``localhost`` signed by it."""

    ca: Path  # PEM: what a client trusts (GIT_SSL_CAINFO / http.sslCAInfo)
    cert: Path  # PEM: the server's certificate
    key: Path  # PEM: the server's private key


def make_certificates(directory: Path, *, name: str = "AFDP test CA") -> Certificates:
    """Write a fresh CA and a server certificate for 127.0.0.1 into ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    found = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    found.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return found


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    user: str | None  # the authenticated user, None when anonymous or refused
    status: int
    chunked: bool = False  # the body came with Transfer-Encoding: chunked
    encoding: str | None = None  # the body's Content-Encoding (gzip)


@dataclass
class GitHttpsServer:
    """A running server: ``url(name)`` is a repository's URL under ``root``."""

    root: Path  # GIT_PROJECT_ROOT: the bare repositories served
    port: int
    certificates: Certificates
    users: dict[str, str]
    requests: list[Request] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, name: str, *, user: str | None = None, password: str | None = None) -> str:
        """``https://[user[:password]@]127.0.0.1:PORT/<name>``."""
        auth = ""
        if user is not None:
            auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
        return f"https://{auth}127.0.0.1:{self.port}/{name}"

    def pushes_received(self) -> list[Request]:
        """The receive-pack POSTs that reached ``git http-backend`` (pushes with a pack)."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/git-receive-pack") and r.status == 200]


def _handler(server: GitHttpsServer, *, private: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _user(self) -> str | None:
            header = self.headers.get("Authorization", "")
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user if server.users.get(user) == password and user else None

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes, path: str, query: str, user: str | None) -> None:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            server.requests.append(Request(self.command, path, query, user, status, chunked, self.headers.get("Content-Encoding")))
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            body = self._body()
            pushing = "service=git-receive-pack" in query or path.endswith("/git-receive-pack")
            user = self._user()
            if (pushing or private) and user is None:
                challenge = [("WWW-Authenticate", 'Basic realm="AFDP evidence"'), ("Content-Type", "text/plain")]
                self._answer(401, challenge, b"authentication required\n", path, query, None)
                return
            environment = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(server.root),
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": unquote(path),
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_ADDR": self.client_address[0],
            }
            if user is not None:
                environment["REMOTE_USER"] = user
            for header, variable in (("Content-Encoding", "HTTP_CONTENT_ENCODING"), ("Git-Protocol", "HTTP_GIT_PROTOCOL")):
                if self.headers.get(header):
                    environment[variable] = self.headers[header]
            ran = subprocess.run([HTTP_BACKEND], input=body, env=environment, capture_output=True, timeout=120, check=False)
            head, separator, payload = ran.stdout.partition(b"\r\n\r\n")
            if not separator:
                head, separator, payload = ran.stdout.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name.strip(), value.strip()))
            if not separator:
                status, headers, payload = 500, [("Content-Type", "text/plain")], ran.stderr
            self._answer(status, headers, payload, path, query, user)

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler], context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def get_request(self):  # type: ignore[no-untyped-def]
        # the TLS handshake happens in the request's thread (first read), not in accept():
        # a client that refuses the certificate never holds up the others
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # a client that refused our certificate, or hung up: its own error is the test's subject


def git_http_backend_missing() -> str | None:
    if shutil.which("git") is None or not os.access(HTTP_BACKEND, os.X_OK):
        return f"git and {HTTP_BACKEND} are needed for the HTTPS remote"
    return None


@contextlib.contextmanager
def serve_git_https(root: Path, certificates: Certificates, users: dict[str, str], *, private: bool = False) -> Iterator[GitHttpsServer]:
    """Serve the bare repositories under ``root`` over HTTPS on a free loopback port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert, certificates.key)
    state = GitHttpsServer(root, 0, certificates, dict(users))
    httpd = _Server(("127.0.0.1", 0), _handler(state, private=private), context)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="git-https", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
