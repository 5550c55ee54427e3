"""Secrets never reach evidence (issue 9, items 6 and 7), at the level a user meets it.

A real HTTP server on loopback answers 401 and echoes the bearer token it received:
whole, cut at every offset around the collector's 80-character snippet, hex-, base64-
and URL-encoded, inside JSON. `afdp run --no-prefect` records the run; then EVERY byte
of the evidence repository (every object of the object database, every commit message,
the spool folder) and the command's own output are searched for the token, for every
prefix and suffix of it of 6 characters or more, and for its encodings.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from afdp.pipeline.secrets import MIN_FRAGMENT, Scrubber

TOKEN = "tok-9f8e7d6c5b4a3f2e1d0c+Zx/q="

PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"

ECHOES = {
    "whole": lambda auth: auth,
    "json": lambda auth: json.dumps({"error": "unauthorized", "got": auth}),
    "hex": lambda auth: auth.encode().hex(),
    "base64": lambda auth: base64.b64encode(auth.encode()).decode(),
    "base64-shifted": lambda auth: base64.b64encode(b"x" + auth.encode()).decode(),
    "url": lambda auth: quote(auth, safe=""),
    **{f"cut-{n}": functools.partial(lambda n, auth: "e" * n + " " + auth, n) for n in (50, 60, 66, 70, 72, 75, 78)},
}


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        kind = self.path.strip("/").split("?")[0]
        body = ECHOES[kind](self.headers.get("Authorization", "")).encode()
        self.send_response(401)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _workflow(base: str, kind: str) -> str:
    return f"""\
name: echo
version: "1"
collectors:
  api:
    type: rest
    url: {base}/{kind}
    headers:
      Authorization: Bearer ${{env.API_TOKEN}}
    timeout: 2s
metrics:
  value: {{collector: api, select: data.value, unit: count}}
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact: {{metrics: [value]}}
"""


def _leaks(data: str) -> list[str]:
    """Every form of TOKEN that must not appear in ``data``."""
    found = []
    for size in range(MIN_FRAGMENT, len(TOKEN) + 1):
        for piece in {TOKEN[:size], TOKEN[-size:]}:
            if piece in data and not piece.isalpha():
                found.append(piece)
    hit = Scrubber({"API_TOKEN": TOKEN}).encoded(data)
    if hit:
        found.append(f"encoded:{hit[1]}")
    return found


def _every_byte(repo: Path) -> str:
    """All objects of the repository, decompressed, and every other file in it, as text."""
    import pygit2

    git = pygit2.Repository(str(repo))
    texts = [git.get(oid).read_raw().decode("latin-1") for oid in git.odb]
    for path in repo.rglob("*"):
        if path.is_file() and "/objects/" not in str(path):
            texts.append(path.read_bytes().decode("latin-1"))
        elif path.is_file():
            raw = path.read_bytes()
            try:
                texts.append(zlib.decompress(raw).decode("latin-1"))
            except zlib.error:
                texts.append(raw.decode("latin-1"))
    return "\n".join(texts)


@pytest.mark.parametrize("kind", sorted(ECHOES))
def test_an_echoed_token_never_reaches_the_evidence(cli, tmp_path, keys, tsa, echo_server, monkeypatch, kind):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    evidence = tmp_path / "evidence"
    assert cli("init", str(evidence)).code == 0
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(_workflow(echo_server, kind))
    policy.write_text(PERMISSIVE)
    result = cli(
        "run", str(workflow), "--service", "api", "--deployment", f"e-{kind}", "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect", "--json",
    )
    assert result.code == 0, result.err
    outcome = json.loads(result.out)
    capture = next(s for s in outcome["steps"] if s["name"] == "capture_impact")
    assert capture["status"] == "failed"  # a 401 is a failed collection, recorded with its reason
    assert _leaks(_every_byte(evidence)) == []
    assert _leaks(result.out + result.err) == []


def test_the_scrubber_removes_cut_echoes_and_finds_encodings():
    scrub = Scrubber({"API_TOKEN": TOKEN})
    for cut in range(MIN_FRAGMENT, len(TOKEN)):
        assert _leaks(scrub.text("answer: Bearer " + TOKEN[:cut])) == []
        assert _leaks(scrub.text(TOKEN[-cut:] + " was the token")) == []
    assert scrub.text("mark_successful, sqlite, postgresql") == "mark_successful, sqlite, postgresql"
    url = Scrubber({"DATABASE_URL": "postgresql://app:s3cret-pw@db.internal:5432/shop"})
    assert url.text("other: postgresql://reader@replica:5432/x") == "other: postgresql://reader@replica:5432/x"
    assert "s3cret" not in url.text("error at postgresql://app:s3cret-p") and "[redacted env.DATABASE_URL]" in url.text("error at postgresql://app:s3cret-p")
    for form in (TOKEN.encode().hex(), TOKEN.encode().hex().upper(), base64.b64encode(TOKEN.encode()).decode(),
                 base64.urlsafe_b64encode(b"ab" + TOKEN.encode()).decode(), quote(TOKEN, safe="")):
        assert scrub.encoded(f"prefix {form} suffix") is not None, form
    assert scrub.encoded("nothing here") is None


def test_the_last_line_scan_finds_a_secret_left_verbatim():
    # The scan before signing also reads bytes no scrubbing touched (a series file): the
    # value itself counts as found there; a short one is not (it could be any number).
    assert Scrubber({"API_TOKEN": TOKEN}).encoded(f'{{"source": "{TOKEN}"}}') == ("API_TOKEN", "verbatim")
    assert Scrubber({"PIN": "1234"}).encoded('{"samples": [[1, 1234]]}') is None


SQL_WORKFLOW = """\
name: sql_secret
collectors:
  db: {{type: sql, url: "sqlite:///{db}"}}
workflow:
  - record_table_sizes:
      collector: db
      query: {query}
"""


@pytest.mark.parametrize(
    ("where", "yaml"),
    [
        ("a query's text", SQL_WORKFLOW.format(db="x.db", query="\"SELECT hex('${env.API_TOKEN}')\"")),
        ("a request body", "name: b\ncollectors:\n  api: {type: rest, url: 'http://127.0.0.1:9/x', method: POST, body: '{\"t\": \"${env.API_TOKEN}\"}'}\nmetrics:\n  v: {collector: api, select: a, unit: count}\nworkflow:\n  - capture: v\n"),
        ("a URL's path or query", "name: q\ncollectors:\n  api: {type: rest, url: 'http://127.0.0.1:9/x?token=${env.API_TOKEN}'}\nmetrics:\n  v: {collector: api, select: a, unit: count}\nworkflow:\n  - capture: v\n"),
        ("a URL's host", "name: h\ncollectors:\n  api: {type: rest, url: 'http://${env.API_TOKEN}.example/x'}\nmetrics:\n  v: {collector: api, select: a, unit: count}\nworkflow:\n  - capture: v\n"),
        ("a query's text", "name: m\nmetrics:\n  v: {query: 'up{token=\"${env.API_TOKEN}\"}', unit: count}\nworkflow:\n  - capture: v\n"),
        ("a command's arguments", "name: c\nactions:\n  rollback: {command: ['/usr/bin/kubectl', '--token', '${env.API_TOKEN}']}\nworkflow:\n  - mark_deployment_time\n  - gate: {condition: 'true'}\n"),
    ],
    ids=["sql-query", "rest-body", "url-query", "url-host", "metric-query", "command-arg"],
)
def test_validate_refuses_secrets_where_they_can_come_back(cli, tmp_path, where, yaml):
    path = tmp_path / "w.yaml"
    path.write_text(yaml)
    result = cli("validate", str(path))
    assert result.code == 1, result.out
    assert "is a secret; secrets may only stand where credentials go" in result.out
    assert f"not in {where}" in result.out


@pytest.mark.parametrize(
    "collector",
    [
        "{type: rest, url: 'http://127.0.0.1:9/x', headers: {Authorization: 'Bearer ${env.API_TOKEN}'}}",
        "{type: rest, url: 'http://user:${env.API_TOKEN}@127.0.0.1:9/x'}",
        "{type: rest, url: '${env.API_URL}'}",
    ],
    ids=["header", "user-info", "whole-url"],
)
def test_validate_accepts_secrets_where_credentials_go(cli, tmp_path, collector):
    path = tmp_path / "w.yaml"
    path.write_text(f"name: ok\ncollectors:\n  api: {collector}\nmetrics:\n  v: {{collector: api, select: a, unit: count}}\nworkflow:\n  - capture: v\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    result = cli("validate", str(path), "--policy", str(policy))
    assert result.code == 0, result.out
