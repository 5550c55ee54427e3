"""The ledger commands end to end through the real CLI entry point, and their bad input.

Each bad input gets one line on stderr, the contract's exit code, no traceback (the
``cli`` fixture asserts that), and leaves the branch exactly as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pygit2
import pytest

from afdp.evidence.names import branch_ref


@pytest.fixture()
def workspace(tmp_path: Path, cli, tsa, keys):
    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    trust = tmp_path / "trust.yaml"
    assert cli("trust", "init", str(trust), "--key", str(keys / "dev.key.pub"), "--tsa-root", str(tsa.directory / "root.pem")).code == 0
    result = tmp_path / "baseline.json"
    result.write_text(json.dumps({"p50_ms": 42.0, "error_rate": 0.001}))
    return {"repo": repo, "trust": trust, "result": result, "key": keys / "dev.key", "tsa": tsa.url}


def record(cli, ws, *extra: str, step: str = "capture_baseline", result=None, deployment: str = "d-42"):
    return cli(
        "record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", deployment, "--step", step,
        "--result", str(result or ws["result"]), "--key", str(ws["key"]), "--tsa", ws["tsa"], *extra,
    )


def head(repo: Path, deployment: str = "d-42"):
    ref = pygit2.Repository(str(repo)).references.get(branch_ref("api", deployment))
    return None if ref is None else ref.target


def test_record_seal_verify_log_story(cli, workspace):
    ws = workspace
    first = record(cli, ws, "--json")
    assert first.code == 0, first.err
    written = first.json()
    assert [w["step"] for w in written] == ["genesis", "capture_baseline"]
    assert record(cli, ws, step="capture_impact").code == 0
    sealed = cli("seal", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--key", str(ws["key"]), "--tsa", ws["tsa"])
    assert sealed.code == 0, sealed.err
    verified = cli("verify", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--trust", str(ws["trust"]), "--json")
    assert verified.code == 0, verified.out
    transcript = verified.json()
    assert transcript["ok"] is True
    assert transcript["branches"][0]["state"] == "verified"
    assert [r["step"] for r in transcript["branches"][0]["records"]] == ["genesis", "capture_baseline", "capture_impact", "seal"]
    human = cli("verify", "--repo", str(ws["repo"]), "--all", "--trust", str(ws["trust"]))
    assert human.code == 0 and "VERIFIED api/d-42" in human.out
    # the human verdict keeps no records (flat memory) yet counts and names what the JSON does
    signers = sorted({r["signer"] for r in transcript["branches"][0]["records"] if r["signer"]})
    assert f"VERIFIED api/d-42: 4 record(s), sealed; signed by {', '.join(signers)};" in human.out, human.out
    one = cli("verify", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--trust", str(ws["trust"]))
    assert f"VERIFIED api/d-42: 4 record(s), sealed; signed by {', '.join(signers)};" in one.out, one.out
    story = cli("log", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--json").json()
    assert story["sealed"] is True and [r["step"] for r in story["records"]][-1] == "seal"
    # plain git reads as the story, with trailers
    git_log = subprocess.run(["git", "-C", str(ws["repo"]), "log", "--format=%s", "afdp/api/d-42"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert git_log[0].startswith("seal:") and git_log[-1].startswith("genesis:")
    assert any(line.startswith("capture_impact: ok") for line in git_log)
    trailers = subprocess.run(["git", "-C", str(ws["repo"]), "log", "-1", "--format=%(trailers:key=AFDP-Digest,valueonly)", "afdp/api/d-42"], capture_output=True, text=True, check=True).stdout
    assert trailers.strip().startswith("sha256:")


def test_verify_failure_exit_code_and_message_names_record_and_check(cli, workspace, tmp_path):
    ws = workspace
    assert record(cli, ws).code == 0
    # unsealed: fails without --allow-unsealed, passes with it
    args = ["verify", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--trust", str(ws["trust"])]
    failed = cli(*args)
    assert failed.code == 1 and "branch: seal: branch is not sealed" in failed.out
    assert "FAILED api/d-42: 1 failure(s) in 2 record(s)" in failed.out, failed.out
    assert cli(*args, "--allow-unsealed").code == 0


def test_openssl_verifies_every_token_without_afdp(cli, workspace, tsa):
    import base64
    import hashlib

    ws = workspace
    assert record(cli, ws).code == 0
    repo = pygit2.Repository(str(ws["repo"]))
    tree = repo.get(repo.references[branch_ref("api", "d-42")].target).tree
    checked = 0
    for shard in repo.get(tree["records"].id):
        for record_tree in repo.get(shard.id):
            folder = repo.get(record_tree.id)
            envelope = json.loads(repo.get(folder["envelope.json"].id).data)
            imprint = hashlib.sha256(base64.b64decode(envelope["signatures"][0]["sig"])).hexdigest()
            token = ws["repo"].parent / f"{record_tree.name}.tsr"
            token.write_bytes(repo.get(folder["timestamp-0.tsr"].id).data)
            out = subprocess.run(
                ["openssl", "ts", "-verify", "-digest", imprint, "-in", str(token), "-CAfile", str(tsa.directory / "root.pem"), "-untrusted", str(tsa.directory / "tsa.pem")],
                capture_output=True, text=True,
            )
            assert out.returncode == 0 and "Verification: OK" in out.stdout, out.stderr
            checked += 1
    assert checked == 2


@pytest.mark.parametrize("bad", ["a/b", "..", "has space", "tab\tname", "ctrl\x01", "", "-leading", "x" * 101, "end.lock", "a..b"])
def test_bad_names_are_usage_errors(cli, workspace, bad):
    result = record(cli, workspace, deployment=bad)
    assert result.code == 2
    assert "invalid deployment name" in result.err and len(result.err.strip().splitlines()) == 1
    assert head(workspace["repo"]) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("42", "must be a JSON object"), ('{"x": NaN}', "cannot be canonicalized"),
     # Python's json keeps the last value, other parsers the first: refused, not guessed
     ('{"ok": true, "ok": false}', "names 'ok' twice"), ('{"a": {"b": 1, "b": 2}}', "names 'b' twice"),
     pytest.param("[" * 100_000 + "]" * 100_000, "nested too deeply", id="nested-100000")],
)
def test_bad_results_leave_the_branch_unchanged(cli, workspace, tmp_path, content, message):
    ws = workspace
    assert record(cli, ws).code == 0
    before = head(ws["repo"])
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = record(cli, ws, result=bad, step="capture_impact")
    assert result.code == 2 and message in result.err
    assert head(ws["repo"]) == before


def test_key_that_does_not_parse(cli, workspace, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    result = cli("record", "--repo", str(workspace["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(workspace["result"]), "--key", str(bad), "--tsa", workspace["tsa"])
    assert result.code == 2 and "does not parse" in result.err
    assert head(workspace["repo"]) is None


def test_all_tsas_down_is_operational_and_writes_nothing(cli, workspace):
    ws = workspace
    assert record(cli, ws).code == 0
    before = head(ws["repo"])
    result = cli("record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s2", "--result", str(ws["result"]), "--key", str(ws["key"]), "--tsa", "http://127.0.0.1:9/", "--tsa", "http://127.0.0.1:1/")
    assert result.code == 3
    assert "127.0.0.1:9" in result.err and "127.0.0.1:1" in result.err
    assert head(ws["repo"]) == before


def test_tsa_failover_uses_the_first_that_answers(cli, workspace):
    ws = workspace
    result = cli("record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(ws["result"]), "--key", str(ws["key"]), "--tsa", "http://127.0.0.1:9/", "--tsa", ws["tsa"], "--json")
    assert result.code == 0, result.err
    assert result.json()[-1]["tsa_url"] == ws["tsa"]


def test_tsa_answering_garbage_writes_nothing(cli, workspace):
    import http.server
    import threading

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html>not a timestamp</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = cli("record", "--repo", str(workspace["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(workspace["result"]), "--key", str(workspace["key"]), "--tsa", url)
    finally:
        server.shutdown()
    assert result.code == 3 and url in result.err
    assert head(workspace["repo"]) is None


def test_unknown_deployment_and_service(cli, workspace):
    ws = workspace
    assert record(cli, ws).code == 0
    unknown = cli("verify", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "nope", "--trust", str(ws["trust"]))
    assert unknown.code == 2 and "deployments of api: d-42" in unknown.err
    other = cli("log", "--repo", str(ws["repo"]), "--service", "web", "--deployment", "d-42")
    assert other.code == 2 and "no evidence branch" in other.err
    missing_repo = cli("verify", "--repo", str(ws["repo"].parent / "nowhere"), "--all", "--trust", str(ws["trust"]))
    assert missing_repo.code == 2 and "not an evidence repository" in missing_repo.err


def test_verify_usage_errors(cli, workspace):
    ws = workspace
    assert cli("verify", "--repo", str(ws["repo"]), "--trust", str(ws["trust"])).code == 2
    assert cli("verify", "--repo", str(ws["repo"]), "--all").code == 2  # --trust is required
    inside = ws["repo"] / "trust.yaml"
    inside.write_bytes(ws["trust"].read_bytes())
    refused = cli("verify", "--repo", str(ws["repo"]), "--all", "--trust", str(inside))
    assert refused.code == 2 and "inside the evidence repository" in refused.err


def test_record_without_tsa_is_a_usage_error(cli, workspace, monkeypatch):
    monkeypatch.delenv("AFDP_TSA_URLS", raising=False)
    ws = workspace
    result = cli("record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(ws["result"]), "--key", str(ws["key"]))
    assert result.code == 2 and "--tsa" in result.err


def test_keys_generate_refuses_overwrite_and_writes_0600(cli, tmp_path):
    key = tmp_path / "k.key"
    assert cli("keys", "generate", str(key)).code == 0
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.key.pub").read_bytes()
    assert cli("keys", "generate", str(key)).code == 2


def test_signer_by_securesystemslib_uri(workspace, tsa, keys, cli):
    ws = workspace
    result = cli("record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(ws["result"]), "--key", f"file2:{keys / 'dev.key'}", "--public-key", str(keys / "dev.key.pub"), "--tsa", tsa.url)
    assert result.code == 0, result.err
    no_pub = cli("record", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s2", "--result", str(ws["result"]), "--key", f"file2:{keys / 'dev.key'}", "--tsa", tsa.url)
    assert no_pub.code == 2 and "--public-key" in no_pub.err


def test_verify_help_starts_fast_without_prefect():
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "afdp", "verify", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert out.returncode == 0 and "--trust" in out.stdout
    assert "prefect" not in out.stderr and "pygit2" not in out.stderr
    assert elapsed < 5  # generous: timing is reported by the benchmark, not asserted tightly here


def test_tsa_token_for_a_different_message_writes_nothing(cli, workspace, tsa):
    import http.server
    import threading

    import rfc3161_client

    from afdp.evidence.notary import EmbeddedTSA

    embedded = EmbeddedTSA.load(tsa.directory)
    foreign = rfc3161_client.TimestampRequestBuilder().data(b"someone else's signature").nonce(nonce=True).build()

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = embedded.respond(foreign.as_bytes())  # a valid token, over another message
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = cli("record", "--repo", str(workspace["repo"]), "--service", "api", "--deployment", "d-42", "--step", "s", "--result", str(workspace["result"]), "--key", str(workspace["key"]), "--tsa", url)
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 3 and "different message" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert head(workspace["repo"]) is None


def test_signer_that_cannot_sign_writes_nothing(workspace, tsa, keys):
    # A KMS/HSM signer cannot exist offline; this subclass of securesystemslib's real
    # CryptoSigner stands in for one whose backend fails mid-request.
    from securesystemslib.signer import CryptoSigner

    from afdp.errors import SigningError
    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record
    from afdp.evidence.signing import load_signer

    real = load_signer(str(keys / "dev.key"))

    class Unreachable(CryptoSigner):
        def sign(self, payload: bytes):
            raise ConnectionError("KMS endpoint unreachable")

    broken = Unreachable(real._private_key)  # noqa: SLF001 - same key, failing backend
    with pytest.raises(SigningError, match="KMS endpoint unreachable") as caught:
        append_record(workspace["repo"], service="api", deployment="d-42", draft=rec.RecordDraft(kind=rec.KIND_STEP, step="s", result={}), signer=broken, tsa_urls=[tsa.url])
    assert caught.value.exit_code == 3
    assert head(workspace["repo"]) is None


def test_bare_repository(cli, workspace, tmp_path):
    ws = dict(workspace)
    ws["repo"] = tmp_path / "bare.git"
    assert cli("init", str(ws["repo"]), "--bare").code == 0
    assert pygit2.Repository(str(ws["repo"])).is_bare
    assert record(cli, ws).code == 0
    verified = cli("verify", "--repo", str(ws["repo"]), "--all", "--trust", str(ws["trust"]), "--allow-unsealed", "--json")
    assert verified.code == 0 and verified.json()["branches"][0]["state"] == "unsealed"


def test_failed_verify_json_transcript_names_record_and_check(cli, workspace):
    ws = workspace
    assert record(cli, ws).code == 0
    result = cli("verify", "--repo", str(ws["repo"]), "--service", "api", "--deployment", "d-42", "--trust", str(ws["trust"]), "--json")
    assert result.code == 1
    transcript = result.json()
    assert transcript["ok"] is False
    branch = transcript["branches"][0]
    assert branch["state"] == "failed"
    assert branch["failures"] == [{"where": "branch", "check": "seal", "reason": branch["failures"][0]["reason"], "sequence": None, "commit": None}]
    assert [r["step"] for r in branch["records"]] == ["genesis", "capture_baseline"]


def test_progress_is_drawn_on_a_terminal_only(cli, workspace):
    import os
    import pty
    import select

    ws = workspace
    assert record(cli, ws).code == 0
    args = [sys.executable, "-m", "afdp", "verify", "--repo", str(ws["repo"]), "--all", "--trust", str(ws["trust"]), "--allow-unsealed"]
    primary, secondary = pty.openpty()
    process = subprocess.Popen(args, stdout=secondary, stderr=subprocess.PIPE, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=30)
    os.close(primary)
    on_terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0
    assert "verifying" in on_terminal and "UNSEALED\x1b[0m api/d-42" in on_terminal
    piped = subprocess.run(args, capture_output=True, text=True)
    assert piped.returncode == 0 and "verifying" not in piped.stdout and "\x1b[" not in piped.stdout
