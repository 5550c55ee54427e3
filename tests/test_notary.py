"""The embedded TSA (afdp/evidence/notary/) and its CLI (afdp tsa init / serve), with real parts.

``afdp tsa serve`` runs as a real subprocess on a free loopback port; records are then
written against it over HTTP and verified, and Ctrl-C (SIGINT) / SIGTERM stop it cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from afdp.errors import ConfigurationError, UsageError
from afdp.evidence.notary import DEV_TSA_WARNING, EmbeddedTSA, init_tsa, serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(directory: Path, port: int) -> tuple[subprocess.Popen[str], str, str]:
    """Start ``afdp tsa serve``; return the process, the URL it printed and its banner."""
    process = subprocess.Popen(
        [sys.executable, "-m", "afdp", "tsa", "serve", str(directory), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("Use:"):
            url = next(x for x in lines if "serving" in x).split(" at ", 1)[1].strip()
            return process, url, "".join(lines)
    process.kill()
    raise AssertionError(f"afdp tsa serve did not start: {lines} {process.stderr.read() if process.stderr else ''}")


def test_cli_tsa_init_writes_a_usable_tsa(cli, tmp_path):
    directory = tmp_path / "tsa"
    result = cli("tsa", "init", str(directory), "--json")
    assert result.code == 0, result.err
    written = result.json()
    root = x509.load_pem_x509_certificate((directory / "root.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((directory / "tsa.pem").read_bytes())
    assert written["root_sha256"] == root.fingerprint(hashes.SHA256()).hex()
    assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    cert.verify_directly_issued_by(root)
    EmbeddedTSA.load(directory)  # loads: key, certificate and root belong together


def test_cli_tsa_init_refuses_to_overwrite(cli, tmp_path):
    directory = tmp_path / "tsa"
    assert cli("tsa", "init", str(directory)).code == 0
    before = (directory / "root.pem").read_bytes()
    again = cli("tsa", "init", str(directory))
    assert again.code == 2 and "--force" in again.err and len(again.err.strip().splitlines()) == 1
    assert (directory / "root.pem").read_bytes() == before
    human = cli("tsa", "init", str(directory), "--force")
    assert human.code == 0 and DEV_TSA_WARNING in human.out
    assert (directory / "root.pem").read_bytes() != before


def test_cli_tsa_serve_then_record_against_it_and_stop_cleanly(cli, tmp_path, keys):
    directory = tmp_path / "tsa"
    assert cli("tsa", "init", str(directory)).code == 0
    port = free_port()
    process, url, _ = start_serve(directory, port)
    try:
        assert url == f"http://127.0.0.1:{port}/"
        repo, trust, result = tmp_path / "evidence", tmp_path / "trust.yaml", tmp_path / "r.json"
        result.write_text(json.dumps({"p99_ms": 120}))
        assert cli("init", str(repo)).code == 0
        common = ["--repo", str(repo), "--service", "api", "--deployment", "d-1", "--key", str(keys / "dev.key"), "--tsa", url]
        recorded = cli("record", *common, "--step", "capture_baseline", "--result", str(result), "--json")
        assert recorded.code == 0, recorded.err
        assert {w["tsa_url"] for w in recorded.json()} == {url}
        assert cli("seal", *common).code == 0
        assert cli("trust", "init", str(trust), "--key", str(keys / "dev.key.pub"), "--tsa-root", str(directory / "root.pem")).code == 0
        verified = cli("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust))
        assert verified.code == 0 and "VERIFIED api/d-1" in verified.out, verified.out
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, content=b"x", headers={"Content-Type": "application/timestamp-query"}, timeout=2)


def test_cli_tsa_serve_says_it_is_a_development_tsa_and_stops_on_sigterm(cli, tmp_path):
    directory = tmp_path / "tsa"
    assert cli("tsa", "init", str(directory)).code == 0
    process, url, banner = start_serve(directory, 0)
    try:
        hello = httpx.get(url, timeout=5)
        assert hello.status_code == 405 and "development and air-gapped" in hello.text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert DEV_TSA_WARNING in banner and "stopped" in out


def test_cli_tsa_serve_bad_input(cli, tmp_path):
    missing = cli("tsa", "serve", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.code == 2 and "not a TSA folder" in missing.err
    directory = tmp_path / "tsa"
    init_tsa(directory)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = cli("tsa", "serve", str(directory), "--port", str(busy.getsockname()[1]))
    assert taken.code == 3 and "cannot listen" in taken.err
    assert cli("tsa", "serve", str(directory), "--port", "70000").code == 2


def test_load_refuses_mismatched_files(tmp_path):
    first, second = init_tsa(tmp_path / "a"), init_tsa(tmp_path / "b")
    (tmp_path / "a" / "tsa.pem").write_bytes(second.certificate.read_bytes())
    with pytest.raises(ConfigurationError, match="does not belong"):
        EmbeddedTSA.load(first.directory)
    init_tsa(tmp_path / "c")
    (tmp_path / "c" / "root.pem").write_bytes(second.root.read_bytes())
    with pytest.raises(ConfigurationError, match="not issued by root.pem"):
        EmbeddedTSA.load(tmp_path / "c")
    (tmp_path / "b" / "key.pem").write_text("not a key")
    with pytest.raises(ConfigurationError, match="key.pem"):
        EmbeddedTSA.load(second.directory)


def test_init_refuses_empty_name(tmp_path):
    with pytest.raises(UsageError, match="common name"):
        init_tsa(tmp_path / "t", common_name="  ")


def test_http_front_end_refuses_what_is_not_a_timestamp_query(tsa):
    wrong_type = httpx.post(tsa.url, content=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert wrong_type.status_code == 415
    garbage = httpx.post(tsa.url, content=b"garbage", headers={"Content-Type": "application/timestamp-query"}, timeout=5)
    assert garbage.status_code == 200
    import rfc3161_client

    answer = rfc3161_client.decode_timestamp_response(garbage.content)
    assert answer.status == rfc3161_client.PKIStatus.REJECTION
    too_big = httpx.post(tsa.url, content=b"x" * (70 * 1024), headers={"Content-Type": "application/timestamp-query"}, timeout=5)
    assert too_big.status_code == 413


def test_in_process_server_close_stops_answering(tmp_path):
    files = init_tsa(tmp_path / "t")
    server = serve(EmbeddedTSA.load(files.directory), port=0)
    with server:
        assert httpx.get(server.url, timeout=5).status_code == 405
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)
