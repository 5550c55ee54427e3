"""Real infrastructure for tests: Debian's Prometheus and PostgreSQL on loopback ports.

Fixtures (register with ``pytest_plugins = ("infra",)`` in conftest, or import them):

- ``prometheus_server`` (session): a factory. ``prometheus_server([target, ...])`` starts
  ``/usr/bin/prometheus`` on a free loopback port, scraping every target once a second
  (a target is ``http://host:port/path`` or ``host:port`` for ``/metrics``), and returns
  its base URL (``http://127.0.0.1:PORT``). Every server it started is stopped at the end
  of the session; ``prometheus_server.stop(url)`` stops one early (a "Prometheus down"
  test). ``prometheus_factory`` is the same fixture under another name.
- ``postgres_url`` (session): a SQLAlchemy URL (``postgresql+psycopg://...``) of a real
  PostgreSQL server (``initdb`` + ``postgres`` from ``/usr/lib/postgresql/*/bin``) running
  in a temporary directory as a non-root user (``postgres`` or ``nobody`` when the tests run
  as root, which PostgreSQL refuses), listening on 127.0.0.1 only.
- ``fresh_postgres_url`` (function): a new, empty database on that server for one test.
- ``sqlite_url`` (function): a SQLAlchemy URL of a new SQLite file in the test's tmp dir.
- ``prefect_api`` (session): a real ``prefect server start`` (:class:`PrefectServer`: its
  API URL, an environment for workers and CLIs, ``deploy`` of flows/prefect.yaml's
  deployment under other names, ``in_this_process`` for ``run_with_prefect``), one per
  xdist worker; tests that use it carry ``xdist_group(PREFECT_GROUP)`` (see there).

A Prometheus with a past: :func:`backfill_openmetrics` writes OpenMetrics samples with
past timestamps as TSDB blocks (``promtool tsdb create-blocks-from openmetrics``) into a
directory; :func:`start_prometheus` on that directory then answers them from history.

Outside pytest, :func:`start_prometheus` and :func:`start_postgres` are context managers
doing the same. A fixture skips (with the reason) only when the binary is not installed;
a binary that is installed but fails to start fails the test with its log.

Each pytest-xdist worker starts its own servers on its own free ports. Servers are
children of the test process with a parent-death signal: a test run killed with SIGKILL
(a CI timeout) leaves no Prometheus or PostgreSQL running.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

PROMETHEUS_BINARY = os.environ.get("AFDP_TEST_PROMETHEUS", "/usr/bin/prometheus")
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT = 30.0


class InfraError(RuntimeError):
    """A server that is installed could not be started; the message carries its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: teardown still stops the server


def _stop(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- Prometheus -----------------------------------------------------------------------


def prometheus_missing() -> str | None:
    """Return why Prometheus tests cannot run (binary missing), or None."""
    if not Path(PROMETHEUS_BINARY).exists():
        return f"{PROMETHEUS_BINARY} is not installed (apt-get install prometheus)"
    return None


def _scrape_config(targets: Sequence[str], scrape_interval: str) -> str:
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {scrape_interval}",
        "scrape_configs:",
    ]
    for index, target in enumerate(targets):
        if "://" in target:
            parts = urlsplit(target)
            scheme, address, path = parts.scheme, parts.netloc, parts.path or "/metrics"
        else:
            scheme, address, path = "http", target, "/metrics"
        lines += [
            f"  - job_name: target{index}",
            f"    scheme: {scheme}",
            f"    metrics_path: {path}",
            f"    scrape_timeout: {scrape_interval}",
            "    honor_labels: true",
            "    static_configs:",
            f"      - targets: ['{address}']",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def start_prometheus(
    targets: Sequence[str], directory: Path, *, scrape_interval: str = "1s"
) -> Iterator[str]:
    """Run Prometheus scraping ``targets`` with its config and storage in ``directory``.

    Yields:
        The base URL, once ``/-/ready`` answers 200.

    Raises:
        InfraError: it did not become ready (the message has its log).
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(_scrape_config(targets, scrape_interval))
    log = directory / "prometheus.log"
    last_error = ""
    for _attempt in range(3):  # another process may take the port between pick and bind
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS_BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        try:
            if _wait_ready(process, f"{url}/-/ready"):
                yield url
                return
            last_error = _tail(log)
        finally:
            _stop(process)
    raise InfraError(f"prometheus did not start: {last_error}")


PROMTOOL_BINARY = os.environ.get("AFDP_TEST_PROMTOOL", "/usr/bin/promtool")


def backfill_openmetrics(text: str, directory: Path) -> Path:
    """Write the OpenMetrics ``text`` (samples with past timestamps, ending ``# EOF``) as
    TSDB blocks into ``directory / "data"`` with ``promtool tsdb create-blocks-from
    openmetrics``, so a :func:`start_prometheus` on ``directory`` answers a real history.

    Returns:
        The TSDB directory.

    Raises:
        InfraError: promtool refused the input (its output is in the message).
    """
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    source = directory / "history.om"
    source.write_text(text)
    done = subprocess.run(
        [PROMTOOL_BINARY, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise InfraError(f"promtool backfill failed: {done.stdout[-800:]} {done.stderr[-800:]}")
    return data


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def wait_for_series(base_url: str, query: str, *, timeout: float = 20.0) -> None:
    """Wait until the instant ``query`` returns at least one series on ``base_url``.

    Prometheus 2.x applies its scrape targets about 5 s after it starts, so the first
    series of a new server appear after ~5 s however short the scrape interval is.

    Raises:
        AssertionError: nothing after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{base_url}/api/v1/query", params={"query": query}, timeout=2.0)
            if answer.status_code == 200 and answer.json()["data"]["result"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"no series for {query!r} on {base_url} after {timeout}s")


class PrometheusFactory:
    """Start Prometheus servers on demand; stop them all on :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._stack = contextlib.ExitStack()
        self._servers: dict[str, contextlib.ExitStack] = {}

    def __call__(self, targets: Sequence[str], *, scrape_interval: str = "1s") -> str:
        """Start a server scraping ``targets``; return its base URL."""
        reason = prometheus_missing()
        if reason:
            pytest.skip(reason)
        stack = contextlib.ExitStack()
        directory = self._root / f"prometheus-{len(self._servers)}-{uuid.uuid4().hex[:6]}"
        try:
            url = stack.enter_context(
                start_prometheus(targets, directory, scrape_interval=scrape_interval)
            )
        except InfraError as exc:
            stack.close()
            pytest.fail(str(exc))
        self._servers[url] = stack
        return url

    def stop(self, url: str) -> None:
        """Stop the server at ``url`` now (its port then refuses connections)."""
        stack = self._servers.pop(url, None)
        if stack is not None:
            stack.close()

    def close(self) -> None:
        """Stop every server still running."""
        for url in list(self._servers):
            self.stop(url)


@pytest.fixture(scope="session")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """A factory: ``prometheus_server(targets) -> base URL`` (real Debian Prometheus)."""
    reason = prometheus_missing()
    if reason:
        pytest.skip(reason)
    factory = PrometheusFactory(tmp_path_factory.mktemp("prometheus"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def prometheus_factory(prometheus_server: PrometheusFactory) -> PrometheusFactory:
    """The same factory as ``prometheus_server``."""
    return prometheus_server


# --- Prefect server (one per xdist worker) ---------------------------------------------
#
# A real ``prefect server start`` costs ~10 s of CPU (a fresh SQLite database migrated
# from scratch), which is 50-80 s of wall time on 2 cores shared by 6 slow tests. The
# tests that need a Prefect API share one per pytest-xdist worker (``prefect_api``), and
# carry ``@pytest.mark.xdist_group(PREFECT_GROUP)``: CI runs the slow tests with
# ``--dist loadgroup``, which sends them all to the same worker, so one server is started
# for the run. Without that option they still pass (each worker starts its own server).
# Each test keeps its own names on the server (work pools, deployments, flow-run names)
# and filters by them; a test that adds server-wide state (an automation) removes it.

PREFECT_GROUP = "prefect-server"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def run_env(**extra: str) -> dict[str, str]:
    """This process's environment with no Prefect profile of the machine leaking in."""
    return {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **extra,
    }


class PrefectServer:
    """A running ``prefect server start`` on a loopback port, with its own PREFECT_HOME."""

    def __init__(self, api: str, home: Path) -> None:
        self.api = api
        self.home = home

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a process that talks to this server (a CLI, a worker, afdp
        serve): its API URL, its home, PYTHONPATH the project under test."""
        return run_env(PREFECT_API_URL=self.api, PREFECT_HOME=str(self.home), PYTHONPATH=str(PROJECT_ROOT), **extra)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        """Run ``prefect *args`` against this server; fail the test with its output if it fails."""
        done = subprocess.run(["prefect", *args], env=env or self.env(), cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"prefect {' '.join(args)} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        return done.stdout

    @contextlib.contextmanager
    def in_this_process(self) -> Iterator[None]:
        """Point this process's Prefect client (``run_with_prefect``, ``get_client``) at the
        server for the ``with`` block only."""
        import importlib

        importlib.import_module("afdp.pipeline.flow")  # sets the telemetry defaults before Prefect loads
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api}):
            yield

    def deploy(self, directory: Path, *, pool: str, names: Sequence[str],
               concurrency_limit: int | None = None) -> None:
        """Create the process work pool ``pool`` and deploy, for each name, the shipped
        flows/prefect.yaml deployment renamed (``afdp-evidence/<name>``) onto that pool."""
        import copy

        import yaml

        shipped = yaml.safe_load((PROJECT_ROOT / "flows" / "prefect.yaml").read_text())
        project = copy.deepcopy(shipped)
        project["deployments"] = []
        for name in names:
            deployment = copy.deepcopy(shipped["deployments"][0])
            deployment.update(name=name, parameters={}, work_pool={"name": pool})
            if concurrency_limit is not None:
                deployment["concurrency_limit"] = {"limit": concurrency_limit, "collision_strategy": "ENQUEUE"}
            project["deployments"].append(deployment)
        prefect_file = directory / f"prefect-{pool}.yaml"
        prefect_file.write_text(yaml.safe_dump(project))
        self.cli("work-pool", "create", pool, "--type", "process")
        self.cli("--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all")


def start_process(stack: contextlib.ExitStack, args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group (output to ``log``); ``stack`` stops the
    whole group (a Prefect worker and the flow-run processes it started)."""
    handle = stack.enter_context(open(log, "wb"))  # noqa: SIM115
    process = subprocess.Popen(list(args), env=env, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)

    def stop() -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)

    stack.callback(stop)
    return process


def wait_http(url: str, *, seconds: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (fail early if ``process`` exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@contextlib.contextmanager
def start_prefect_server(directory: Path, *, timeout: float = 240) -> Iterator[PrefectServer]:
    """Run ``prefect server start`` with its home (and SQLite database) in ``directory``.

    Yields:
        The server, once ``/api/health`` answers.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for _attempt in range(3):  # another process may take the port between pick and bind
            port = free_port()
            server = PrefectServer(f"http://127.0.0.1:{port}/api", directory / "home")
            process = start_process(stack, ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                    server.env(), directory / f"server-{port}.log")
            try:
                wait_http(f"{server.api}/health", seconds=timeout, process=process)
            except AssertionError:
                if process.poll() is None:
                    raise InfraError(f"prefect server did not start: {_tail(directory / f'server-{port}.log')}") from None
                continue
            yield server
            return
        raise InfraError(f"prefect server did not start: {_tail(directory / f'server-{port}.log')}")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server for the session (per xdist worker): see PREFECT_GROUP."""
    try:
        with start_prefect_server(tmp_path_factory.mktemp("prefect-server")) as server:
            yield server
    except InfraError as exc:
        pytest.fail(str(exc))


def scrape_workflow(name: str, *, window: str = "3s", interval: str = "300ms", requests: bool = True,
                    extra_metrics: str = "", triggers: Sequence[str] = ()) -> str:
    """A small evidence workflow against a DemoService's /metrics (``METRICS_URL``):
    baseline and impact windows of ``window``, Mann-Whitney, a 50 ms latency criterion."""
    metrics = ["latency_mean", *(["requests"] if requests else []),
               *[line.strip().rstrip(":") for line in extra_metrics.splitlines() if line.startswith("  ") and not line.startswith("   ")]]
    return f"""\
name: {name}
version: "1"
{f"triggers: [{', '.join(triggers)}]" + chr(10) if triggers else ""}variables:
  METRICS_URL: http://127.0.0.1:1/metrics
collectors:
  svc:
    type: scrape
    url: ${{workflow.METRICS_URL}}
metrics:
  latency_mean:
    collector: svc
    metric: http_request_duration_seconds
    unit: s
""" + ("""\
  requests:
    collector: svc
    metric: http_requests_total
    unit: 1/s
""" if requests else "") + extra_metrics + f"""\
workflow:
  pre_deployment:
    - capture_baseline:
        duration: {window}
        interval: {interval}
        metrics: [{", ".join(metrics)}]
  deployment:
    - mark_deployment_time
  post_deployment:
    - capture_impact:
        duration: {window}
        interval: {interval}
        metrics: [same_as_baseline]
    - analyze_differences:
        method: mann_whitney
    - decisions
success_criteria:
  - latency_mean.increase < 50ms
"""


# --- PostgreSQL -----------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, or None."""
    found = [Path(p) for p in glob.glob(POSTGRES_BIN_GLOB) if (Path(p) / "initdb").exists()]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _server_user() -> str | None:
    """Return the user to run PostgreSQL as (it refuses root), or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise InfraError("running as root and neither user 'postgres' nor 'nobody' exists")


def _as_user(user: str | None, argv: list[str], *, die_with_parent: bool = False) -> list[str]:
    if user is None:
        return argv
    # setpriv sets the parent-death signal after dropping to ``user`` (a credential change
    # clears one set before), so the server dies with the test process.
    death = ["--pdeathsig", "TERM"] if die_with_parent else []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *death, "--", *argv]


def _postgres_ready(process: subprocess.Popen[bytes], bindir: Path, port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        probe = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "1"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def start_postgres(*, database: str = "afdp", preload: Sequence[str] = ()) -> Iterator[str]:
    """Run a throw-away PostgreSQL server on a free 127.0.0.1 port.

    ``preload`` names libraries for ``shared_preload_libraries`` (``pg_stat_statements``:
    the server then tracks statement times; a database still needs ``CREATE EXTENSION``).

    The server is a direct child of this process (``postgres``, not ``pg_ctl``'s daemon)
    and gets SIGTERM if this process dies, so a killed test run leaves no server behind.
    The data directory is a new directory under the system temp dir (the pytest tmp dir
    is private to root, which the server user cannot enter), removed afterwards.

    Yields:
        A SQLAlchemy URL ``postgresql+psycopg://postgres@127.0.0.1:PORT/<database>``.

    Raises:
        InfraError: initdb or the server failed (the message has the log).
    """
    bindir = postgres_bin()
    if bindir is None:
        raise InfraError("PostgreSQL is not installed")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="afdp-pg-"))
    data, sockets, log = root / "data", root / "run", root / "postgres.log"
    sockets.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    process: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            _as_user(
                user,
                [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync"],
            ),
            capture_output=True,
            env=env,
            timeout=120,
        )
        if init.returncode != 0:
            raise InfraError(f"initdb failed: {init.stderr.decode(errors='replace')[-800:]}")
        for _attempt in range(3):  # another process may take the port between pick and bind
            port = free_port()
            with log.open("ab") as out:
                process = subprocess.Popen(
                    _as_user(
                        user,
                        [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                         "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                         *(["-c", f"shared_preload_libraries={','.join(preload)}"] if preload else [])],
                        die_with_parent=True,
                    ),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    preexec_fn=None if user else _die_with_parent,
                )
            if _postgres_ready(process, bindir, port):
                break
            _stop(process)
            process = None
        if process is None:
            raise InfraError(f"postgres did not start: {_tail(log)}")
        created = subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database],
            capture_output=True,
            env=env,
            timeout=60,
        )
        if created.returncode != 0:
            raise InfraError(f"createdb failed: {created.stderr.decode(errors='replace')}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if process is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: ends sessions, exits in milliseconds.
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            _stop(process, grace=10.0)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a real PostgreSQL database, for the whole session (per worker)."""
    if postgres_bin() is None:
        pytest.skip(f"PostgreSQL is not installed (no {POSTGRES_BIN_GLOB}/initdb)")
    try:
        with start_postgres() as url:
            yield url
    except InfraError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def postgres_statements_url() -> Iterator[str]:
    """Like :func:`postgres_url`, on a server started with
    ``shared_preload_libraries=pg_stat_statements`` (skips when the module is missing)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(f"PostgreSQL is not installed (no {POSTGRES_BIN_GLOB}/initdb)")
    if not (bindir.parent / "lib" / "pg_stat_statements.so").exists():
        pytest.skip("pg_stat_statements is not installed with this PostgreSQL")
    try:
        with start_postgres(preload=("pg_stat_statements",)) as url:
            yield url
    except InfraError as exc:
        pytest.fail(str(exc))


@pytest.fixture()
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty database on the session's PostgreSQL server."""
    import sqlalchemy

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    """A SQLAlchemy URL of a new SQLite database file in the test's tmp dir."""
    return f"sqlite:///{tmp_path / 'test.db'}"


# -- a Git smart-HTTP remote over TLS (tests/https_git.py) ------------------------------------

HTTPS_GIT_USERS = {"deployer": "s3cret-token"}


@pytest.fixture()
def https_git(tmp_path: Path) -> Iterator[object]:
    """``git http-backend`` behind a TLS server on a loopback port (tests/https_git.py),
    serving the bare repositories under ``server.root``: reads are anonymous, pushes need
    HTTP Basic auth as one of :data:`HTTPS_GIT_USERS`. The certificate is signed by a CA
    made for this test (``server.certificates.ca``), which no client trusts unless told
    (``GIT_SSL_CAINFO`` / ``http.sslCAInfo``). Skips when git's http-backend is absent."""
    from https_git import git_http_backend_missing, make_certificates, serve_git_https

    missing = git_http_backend_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path / "served"
    root.mkdir()
    with serve_git_https(root, make_certificates(tmp_path / "tls"), HTTPS_GIT_USERS) as server:
        yield server
