"""The test infrastructure itself: real Prometheus scrapes a target, real PostgreSQL answers."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy
from infra import wait_for_series

PAGE = b"# TYPE afdp_infra_probe gauge\nafdp_infra_probe 42\n"


class _Static(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def static_target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Static)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_target_and_stops(prometheus_server, static_target: str) -> None:
    url = prometheus_server([static_target])
    wait_for_series(url, "afdp_infra_probe")
    answer = httpx.get(f"{url}/api/v1/query", params={"query": "afdp_infra_probe"}).json()
    assert answer["data"]["result"][0]["value"][1] == "42"
    prometheus_server.stop(url)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/-/ready", timeout=2.0)


def test_postgres_runs_and_isolates_databases(postgres_url: str, fresh_postgres_url: str) -> None:
    assert fresh_postgres_url != postgres_url
    engine = sqlalchemy.create_engine(fresh_postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x int)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1), (2)")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT sum(x) FROM t").scalar() == 3
            version = connection.exec_driver_sql("SHOW server_version").scalar()
        assert version
    finally:
        engine.dispose()


def test_sqlite_url_is_a_new_file(sqlite_url: str) -> None:
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar() == 0
    engine.dispose()
