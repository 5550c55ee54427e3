"""``afdp demo``: the whole story on one machine, with no configuration and no network.

:func:`run_demo`:

1. makes (or reuses) a demo folder: a generated dev signing key, AFDP's embedded TSA
   (served on a loopback port for the run), an evidence Git repository;
2. starts :class:`~afdp.demo.service.DemoService` (version v1) and a small control
   endpoint that rolls it back when it receives a correctly HMAC-signed webhook;
3. runs the shipped demo workflow (``afdp/demo/workflow.yaml``) in two phases around a
   real deployment: ``pre`` records the baseline; the service is switched to v2 (40 ms
   slower, ~5% errors); ``post`` marks the deployment, captures the impact, analyses it,
   decides (rollback), calls the rollback webhook, writes the training record and seals;
4. writes an auditor's trust policy naming the dev key and the TSA root, and verifies
   the branch offline against it.

The result carries the exact ``afdp verify`` command (absolute paths) that re-checks the
evidence; the CLI prints it as its last line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from afdp.errors import StorageError, UsageError

SERVICE = "checkout"
WEBHOOK_SECRET_ENV = "AFDP_DEMO_WEBHOOK_SECRET"
#: ``--fast`` divides the demo's waits and windows by this (2m30s of workflow -> 15 s).
DEMO_FAST_SCALE = 10.0
WORKFLOW_FILE = Path(__file__).with_name("workflow.yaml")


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and where it left everything."""

    out_dir: Path
    repository: Path
    trust_policy: Path
    key: Path
    tsa_root: Path
    service: str
    deployment: str
    outcome: dict[str, Any]
    verified: bool
    verification: dict[str, Any]
    rollback_calls: int
    verify_command: str
    seconds: float
    events: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "repository": str(self.repository),
            "trust_policy": str(self.trust_policy),
            "key": str(self.key),
            "tsa_root": str(self.tsa_root),
            "service": self.service,
            "deployment": self.deployment,
            "verified": self.verified,
            "verification": self.verification,
            "rollback_calls": self.rollback_calls,
            "seconds": round(self.seconds, 2),
            "outcome": self.outcome,
            "verify_command": self.verify_command,
        }


class _ControlHandler(BaseHTTPRequestHandler):
    server: _ControlServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20))
        if self.path.split("?", 1)[0] != "/rollback":
            self._answer(404, {"error": "not found"})
            return
        expected = "sha256=" + hmac.new(self.server.secret, body, hashlib.sha256).hexdigest()
        given = self.headers.get("X-AFDP-Signature", "")
        if not hmac.compare_digest(expected, given):
            self._answer(401, {"error": "bad or missing X-AFDP-Signature"})
            return
        self.server.on_rollback()
        self._answer(200, {"rolled_back_to": "v1", "service": SERVICE})

    def _answer(self, code: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: bytes, on_rollback: Callable[[], None]) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.secret = secret
        self.on_rollback = on_rollback


@contextmanager
def control_endpoint(secret: bytes, on_rollback: Callable[[], None]) -> Iterator[int]:
    """Serve ``POST /rollback`` (HMAC-SHA256-signed) on a loopback port; yield the port."""
    server = _ControlServer(secret, on_rollback)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _prepare_folder(out_dir: Path | None) -> Path:
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix="afdp-demo-")).resolve()
    out = out_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / "evidence").exists():
        raise UsageError(f"--out {out} is not empty and is not an earlier demo folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the demo folder {out}: {exc.strerror or exc}") from exc
    return out


def run_demo(
    *,
    out_dir: Path | None = None,
    fast: bool = False,
    use_prefect: bool = False,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the demo end to end and verify what it wrote.

    Returns:
        The :class:`DemoResult` (``verified`` False only if verification failed, with
        the failures in ``verification``).

    Raises:
        UsageError: ``out_dir`` is unusable.
        AfdpError: an operational failure (the folder keeps what was written).
    """
    import time

    from afdp.demo.service import DemoService
    from afdp.evidence.notary import EmbeddedTSA, init_tsa, serve
    from afdp.evidence.signing import generate_key, load_signer
    from afdp.evidence.store import init_repository
    from afdp.evidence.trust import load_trust_policy, write_trust_policy
    from afdp.pipeline.runner import DeploymentInfo, RunRequest
    from afdp.verify.verifier import check_branch
    from afdp.workflow import load_workflow

    say = echo or (lambda _text: None)
    began = time.monotonic()
    out = _prepare_folder(out_dir)
    key = out / "keys" / "dev.key"
    tsa_dir = out / "tsa"
    repository = out / "evidence"
    trust = out / "trust.yaml"
    if not key.exists():
        generate_key(key)
    if not (tsa_dir / "root.pem").exists():
        init_tsa(tsa_dir, common_name="AFDP demo TSA", force=True)
    init_repository(repository)
    deployment = "demo-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    say(f"AFDP demo in {out}")
    say(f"  dev key {key}, embedded TSA in {tsa_dir}, evidence repository {repository}")

    rollbacks: list[str] = []
    secret = secrets.token_hex(16)
    scale = DEMO_FAST_SCALE if fast else 1.0
    workflow = load_workflow(WORKFLOW_FILE)
    previous_secret = os.environ.get(WEBHOOK_SECRET_ENV)
    os.environ[WEBHOOK_SECRET_ENV] = secret  # for the rollback webhook's signature only
    try:
        with (
            serve(EmbeddedTSA.load(tsa_dir), host="127.0.0.1", port=0) as tsa,
            DemoService(name=SERVICE, version="v1") as service,
        ):

            def rollback() -> None:
                rollbacks.append(datetime.now(UTC).isoformat())
                service.deploy("v1")

            with control_endpoint(secret.encode(), rollback) as control_port:
                say(f"  demo service {SERVICE} v1 at {service.url}, TSA at {tsa.url}")
                overrides = {"METRICS_URL": service.metrics_url, "CONTROL_PORT": control_port}
                info = DeploymentInfo(
                    commit=hashlib.sha1(b"checkout v2").hexdigest(),
                    deployer="demo-user",
                    environment="demo",
                    version="v2",
                    changed_files=("src/checkout/pricing.py", "src/checkout/cache.py"),
                    deployment_size=2,
                    branch="main",
                )
                printer = _step_printer(say)
                request = RunRequest(
                    workflow=workflow,
                    repository=repository,
                    service=SERVICE,
                    deployment=deployment,
                    signer=load_signer(str(key)),
                    tsa_urls=(tsa.url,),
                    info=info,
                    overrides=overrides,
                    phase="pre",
                    time_scale=scale,
                    progress=printer,
                )
                params = {
                    "workflow_path": str(WORKFLOW_FILE),
                    "service": SERVICE,
                    "deployment": deployment,
                    "repository": str(repository),
                    "key": str(key),
                    "tsa_urls": [tsa.url],
                    "info": info.to_json(),
                    "overrides": overrides,
                    "time_scale": scale,
                    # The flow's default trigger is a deployment's (deployment_completed);
                    # the demo is started by hand, as its workflow's triggers say.
                    "trigger": "manual_trigger",
                }
                say("1. baseline: measuring v1 before the deployment")
                _run(request, params, "pre", use_prefect)
                deployed_at = service.deploy("v2")
                say(f"2. deployed v2 at {deployed_at.isoformat(timespec='seconds')} (real regression: +40 ms, ~5% errors)")
                say("3. impact: marking the deployment, measuring v2, analysing, deciding")
                deployed_info = replace(info, deployed_at=deployed_at)
                params["info"] = deployed_info.to_json()
                post = replace(request, phase="post", info=deployed_info)
                outcome = _run(post, params, "post", use_prefect)
                final_version = service.version
    finally:
        if previous_secret is None:
            os.environ.pop(WEBHOOK_SECRET_ENV, None)
        else:
            os.environ[WEBHOOK_SECRET_ENV] = previous_secret

    write_trust_policy(trust, keys=[key.with_name(key.name + ".pub")], tsa_roots=[tsa_dir / "root.pem"], force=True)
    policy = load_trust_policy(trust, evidence_repository=repository)
    report = check_branch(repository, service=SERVICE, deployment=deployment, policy=policy)
    decision = outcome.decision or {}
    action = outcome.action or {}
    for line in impact_lines(outcome.analysis or {}):
        say(line)
    say(
        f"4. decision: {decision.get('action')} ({decision.get('decision') or 'default'}, "
        f"label {decision.get('label')}): {decision.get('reason', '')}"
    )
    say(
        f"   rollback webhook: {action.get('status')} ({action.get('detail', '')}); "
        f"service now runs {final_version}"
    )
    if outcome.training:
        say(f"   training record written, label {outcome.training.get('label', decision.get('label'))}")
    verdict = "VERIFIED" if report.ok else "FAILED"
    say(
        f"5. {verdict}: {len(report.records)} records on {outcome.branch}, "
        f"{'sealed' if report.sealed else 'unsealed'}; signatures, RFC3161 time-stamps and the digest chain checked"
    )
    for failure in report.failures:
        say(f"   {failure}")
    say(f"   read the story: afdp log --repo {shlex.quote(str(repository))} --service {SERVICE} --deployment {deployment}")
    say("Re-check the evidence offline (no TSA, no network) with:")
    command = " ".join(
        [
            "afdp verify --repo",
            shlex.quote(str(repository)),
            "--service",
            SERVICE,
            "--deployment",
            deployment,
            "--trust",
            shlex.quote(str(trust)),
        ]
    )
    return DemoResult(
        out_dir=out,
        repository=repository,
        trust_policy=trust,
        key=key,
        tsa_root=tsa_dir / "root.pem",
        service=SERVICE,
        deployment=deployment,
        outcome=outcome.to_json(),
        verified=report.ok,
        verification=report.to_json(),
        rollback_calls=len(rollbacks),
        verify_command=command,
        seconds=time.monotonic() - began,
    )


def _run(request: Any, params: dict[str, Any], phase: str, use_prefect: bool) -> Any:
    with _spinner(f"running the {phase}-deployment phase", enabled=request.progress is not None):
        return _run_phase(request, params, phase, use_prefect)


@contextmanager
def _spinner(text: str, *, enabled: bool) -> Iterator[None]:
    """Show a rich spinner while a phase runs, only when stdout is a terminal."""
    import sys

    if not (enabled and sys.stdout.isatty()):
        yield
        return
    from rich.console import Console

    with Console().status(text):
        yield


def _run_phase(request: Any, params: dict[str, Any], phase: str, use_prefect: bool) -> Any:
    from afdp.pipeline.runner import run_workflow

    if not use_prefect:
        return run_workflow(request)
    try:
        from afdp.pipeline.flow import run_with_prefect
    except ImportError as exc:
        raise UsageError(f"cannot run the demo as a Prefect flow: {exc}") from exc
    return run_with_prefect({**params, "phase": phase}, progress=request.progress)


def impact_lines(analysis: dict[str, Any]) -> list[str]:
    """Return one line per analysed metric: baseline -> impact, change, p-value, verdict."""
    lines = []
    for name, item in (analysis.get("metrics") or {}).items():
        unit = (item.get("unit") or {}).get("symbol", "")
        base, impact = item.get("baseline"), item.get("impact")
        if base is None or impact is None:
            lines.append(f"   {name}: no data ({item.get('status')})")
            continue
        change = item.get("change")
        p_value = item.get("p_value")
        verdict = "DEGRADED" if item.get("degraded") else "ok"
        lines.append(
            f"   {name}: {_show(base, unit)} -> {_show(impact, unit)}"
            + (f" ({change * 100:+.0f}%)" if isinstance(change, (int, float)) else "")
            + (f", p={p_value:.2g}" if isinstance(p_value, (int, float)) else "")
            + f"  {verdict}"
        )
    return lines


def _show(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f}ms"
    return f"{value:.3g}{unit if unit != '1/s' else '/s'}"


def _step_printer(say: Callable[[str], None]) -> Callable[[Any], None]:
    def show(report: Any) -> None:
        if report.resumed:
            return  # recorded by the earlier phase, already printed
        say(f"   {report.status:>7}  #{report.sequence:<2} {report.name}: {report.summary}")

    return show
