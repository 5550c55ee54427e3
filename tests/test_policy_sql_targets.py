"""The admission policy judges the database a SQL collector will really connect to
(issue 9, item 3): the target the driver takes, query parameters included, read by
SQLAlchemy and libpq's own parser; what cannot be judged is refused when the policy
denies unresolved hosts. Through `afdp validate` (the CLI), with a real policy file.
"""

from __future__ import annotations

import json

import pytest

POLICY = """\
version: 1
name: platform
allowed_collector_types: [sql]
allowed_collector_hosts: [db.allowed.example]
unresolved_hosts: deny
"""


def _validate(cli, tmp_path, url: str):
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(
        f"name: sqlt\ncollectors:\n  db: {{type: sql, url: {json.dumps(url)}}}\n"
        "workflow:\n  - record_table_sizes: {collector: db, query: SELECT 1}\n"
    )
    policy.write_text(POLICY)
    return cli("validate", str(workflow), "--policy", str(policy), "--json")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql+psycopg://u@db.allowed.example/app?host=evil.example", "'evil.example'"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=evil.example&port=6543", "'evil.example'"),
        ("postgresql+psycopg://u@db.allowed.example/app?hostaddr=10.9.8.7", "'10.9.8.7'"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=db.allowed.example,evil.example", "'evil.example'"),
        ("postgresql+psycopg://u@%65vil.example/app", "'%65vil.example'"),  # as the driver gets it
        ("postgresql+psycopg://u@EVIL.example./app", "'evil.example'"),
        ("postgresql+psycopg://u@db.allowed.example/app?service=prod", "service"),
        ("postgresql+psycopg://u@/app?host=/var/run/postgresql", "Unix socket"),
        ("postgresql+psycopg://u@/app", "no host"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=%2Ftmp", "Unix socket"),
        ("mysql+pymysql://u@db.allowed.example/app?unix_socket=/tmp/mysql.sock", "Unix socket"),
        ("mysql+pymysql://u@db.allowed.example/app?host=evil.example", "'evil.example'"),
    ],
)
def test_targets_the_driver_would_reach_are_judged(cli, tmp_path, url, why):
    result = _validate(cli, tmp_path, url)
    assert result.code == 1, result.out
    document = json.loads(result.out)
    assert document["verdict"] == "rejected"
    messages = " ".join(f["message"] for f in document["findings"])
    assert "allowed_collector_hosts" in messages and why in messages, messages


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:pw@db.allowed.example:5432/app",
        "postgresql+psycopg://u@db.allowed.example/app?sslmode=require&connect_timeout=3",
        "mysql+pymysql://u@db.allowed.example/app",
        "sqlite:///var/lib/app.db",
    ],
)
def test_allowed_targets_are_admitted(cli, tmp_path, url):
    result = _validate(cli, tmp_path, url)
    assert result.code == 0, result.out
