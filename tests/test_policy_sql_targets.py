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


def _validate(cli, tmp_path, url: str, policy_text: str = POLICY):
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(
        f"name: sqlt\ncollectors:\n  db: {{type: sql, url: {json.dumps(url)}}}\n"
        "workflow:\n  - record_table_sizes: {collector: db, query: SELECT 1}\n"
    )
    policy.write_text(policy_text)
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
        # more spellings of the same thing
        ("postgresql+psycopg://u@db.allowed.example/app?host=db.allowed.example&hostaddr=10.9.8.7", "'10.9.8.7'"),
        (
            "postgresql+psycopg://u@db.allowed.example/app?host=db.allowed.example,db.allowed.example&hostaddr=,10.9.8.7",
            "'10.9.8.7'",
        ),
        ("postgresql+psycopg://u@db.allowed.example/app?host=db.allowed.example&host=evil.example:5433", "'evil.example'"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=evil.example%2Cdb.allowed.example", "'evil.example'"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=%65vil.example", "'evil.example'"),
        ("postgresql+psycopg://u@[::1]:5432/app", "'::1'"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=[::1]", "'::1'"),
        ("postgresql://u@db.allowed.example/app?host=evil.example", "'evil.example'"),  # psycopg2's dialect
        ("postgresql+psycopg://u@db.allowed.example/app?host=@abstract-socket", "Unix socket"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=%2Fvar%2Frun%2Fpostgresql", "Unix socket"),
        ("postgresql+psycopg://u@db.allowed.example/app?servicefile=/tmp/pg_service.conf", "cannot be checked"),
        ("postgresql+psycopg://u@db.allowed.example/app?host=a,b&hostaddr=10.9.8.7", "differ in length"),
        ("mysql+pymysql://u@db.allowed.example/app?read_default_file=/tmp/evil.cnf", "read_default_file"),
        ("mysql+mysqldb://u@db.allowed.example/app?read_default_group=client", "read_default_group"),
        ("mysql+pymysql://u@db.allowed.example/app?named_pipe=1", "named_pipe"),
        ("mysql+pymysql://u@db.allowed.example/app?some_new_option=1", "some_new_option"),
        ("mysql+pymysql://u@/app", "no host"),
        ("sqlite:///var/lib/app.db?mode=rw", "SQLite"),
        ("sqlite:///file:app.db?vfs=unix-none&immutable=1", "SQLite"),
        ("sqlite:///file:app.db", "SQLite"),
        ("postgresql+pg8000://u@db.allowed.example/app?unix_sock=/tmp/s", "libpq cannot read"),
        ("oracle://u@db.allowed.example/app", "cannot"),
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


WIDER = """\
version: 1
name: platform
allowed_collector_types: [sql]
allowed_collector_hosts: [db.allowed.example, "*.db.example", 10.1.2.3, "[::1]"]
unresolved_hosts: deny
"""


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u@db.allowed.example/app?hostaddr=10.1.2.3",  # libpq goes to 10.1.2.3
        "postgresql+psycopg://u@evil.example/app?host=db.allowed.example",  # the query's host wins
        "postgresql+psycopg://u@db.allowed.example/app?host=a.db.example,b.db.example",
        "postgresql+psycopg://u@[::1]:5432/app",
        "postgresql+psycopg://u@[0:0::1]/app",
        "mysql+pymysql://u@db.allowed.example/app?charset=utf8mb4&connect_timeout=3",
    ],
)
def test_allowed_targets_in_other_spellings_are_admitted(cli, tmp_path, url):
    result = _validate(cli, tmp_path, url, WIDER)
    assert result.code == 0, result.out


def test_policy_that_allows_unresolved_hosts_admits_what_it_cannot_judge(cli, tmp_path):
    result = _validate(
        cli, tmp_path, "postgresql+psycopg://u@db.allowed.example/app?service=prod",
        POLICY.replace("unresolved_hosts: deny", "unresolved_hosts: allow"),
    )
    assert result.code == 0, result.out


# --- what libpq takes from the environment, judged when the run starts (real PostgreSQL) ---
#
# libpq fills every parameter the URL does not set from PG* variables: PGHOSTADDR sends a
# connection to an allowed host *name* to another address, PGHOST names the host of a
# URL without one, PGSERVICE a service file's target. `afdp validate` cannot know the
# run's environment; the run can, and judges it.


def _run_sql(cli, tmp_path, keys, tsa, url: str, policy_text: str, deployment: str = "s-1"):
    workflow, policy, evidence = tmp_path / "wf.yaml", tmp_path / "policy.yaml", tmp_path / "evidence"
    workflow.write_text(
        f"name: sqlt\ncollectors:\n  db: {{type: sql, url: {json.dumps(url)}, timeout: 5s}}\n"
        "workflow:\n  - record_table_sizes: {collector: db, query: 'SELECT 42 AS answer'}\n"
    )
    policy.write_text(policy_text)
    if not evidence.exists():
        assert cli("init", str(evidence)).code == 0
    return cli(
        "run", str(workflow), "--service", "shop", "--deployment", deployment, "--repo", str(evidence),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect", "--json",
    )


def _no_branch(tmp_path) -> bool:
    import pygit2

    return not [r for r in pygit2.Repository(str(tmp_path / "evidence")).references if r.startswith("refs/heads/afdp/")]


def _port(postgres_url: str) -> int:
    from sqlalchemy.engine import make_url

    port = make_url(postgres_url).port
    assert port is not None
    return port


def test_pghostaddr_sends_an_allowed_name_elsewhere_and_is_judged(cli, tmp_path, keys, tsa, postgres_url, monkeypatch):
    url = f"postgresql+psycopg://postgres@db.allowed.example:{_port(postgres_url)}/afdp"
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    result = _run_sql(cli, tmp_path, keys, tsa, url, POLICY)
    assert result.code == 1, (result.code, result.err)
    assert "allowed_collector_hosts" in result.err and "'127.0.0.1'" in result.err and "PGHOSTADDR" in result.err
    assert _no_branch(tmp_path)


def test_pghostaddr_really_redirects_the_driver(cli, tmp_path, keys, tsa, postgres_url, monkeypatch):
    """The control: with 127.0.0.1 allowed too, the same run connects to the real server
    although db.allowed.example resolves nowhere, so PGHOSTADDR is where libpq goes."""
    url = f"postgresql+psycopg://postgres@db.allowed.example:{_port(postgres_url)}/afdp"
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    wider = POLICY.replace("[db.allowed.example]", "[db.allowed.example, 127.0.0.1]")
    result = _run_sql(cli, tmp_path, keys, tsa, url, wider)
    assert result.code == 0, result.err
    step = next(s for s in json.loads(result.out)["steps"] if s["name"] == "record_table_sizes")
    assert step["status"] == "ok", step


def test_pghost_names_the_host_of_a_url_without_one(cli, tmp_path, keys, tsa, postgres_url, monkeypatch):
    url = f"postgresql+psycopg://postgres@:{_port(postgres_url)}/afdp"
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    allow_unresolved = POLICY.replace("unresolved_hosts: deny", "unresolved_hosts: allow")
    result = _run_sql(cli, tmp_path, keys, tsa, url, allow_unresolved)
    assert result.code == 1, (result.code, result.err)
    assert "'127.0.0.1'" in result.err and "PGHOST in the environment" in result.err
    assert _no_branch(tmp_path)


def test_pgservice_in_the_environment_cannot_be_judged(cli, tmp_path, keys, tsa, postgres_url, monkeypatch):
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[afdp]\nhostaddr=127.0.0.1\nport={_port(postgres_url)}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGSERVICE", "afdp")
    url = f"postgresql+psycopg://postgres@db.allowed.example:{_port(postgres_url)}/afdp"
    result = _run_sql(cli, tmp_path, keys, tsa, url, POLICY)
    assert result.code == 1, (result.code, result.err)
    assert "service" in result.err and "allowed_collector_hosts" in result.err
    assert _no_branch(tmp_path)


def test_host_entries_are_judged_as_libpq_reads_them_untrimmed(cli, tmp_path):
    # libpq does not trim list entries: an allowed name with a stray space is another name.
    result = _validate(cli, tmp_path, "postgresql+psycopg://u@x/app?host=db.allowed.example%20")
    assert result.code == 1, result.out
    assert "'db.allowed.example '" in result.out
