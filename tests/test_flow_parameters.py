"""The evidence flow sends Prefect the same parameters as Prefect's own encoder would,
without importing FastAPI for plain JSON values (about 0.25 s of every ``afdp run``).
"""

from __future__ import annotations

import datetime
import enum
import inspect
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path, PurePosixPath

import pytest
from infra import PREFECT_GROUP

ROOT = Path(__file__).resolve().parent.parent

PLAIN = {
    "workflow_path": "/tmp/wf.yaml",
    "service": "api",
    "deployment": "d-1",
    "repository": "/tmp/evidence",
    "key": "file2:/tmp/dev.key",
    "public_key": None,
    "tsa_urls": ["http://127.0.0.1:1/", "https://tsa.example/ä"],
    "info": {
        "commit": "4f2a9c1",
        "changed_files": ["api/app.py", "ünïcode/ß.py"],
        "deployment_size": 12,
        "deployed_at": None,
        "nested": {"list": [1, 2.5, True, None, ["x", {"y": -0.0}]], "tuple": (1, "two")},
        "big": 2**80,
        "floats": [math.inf, -math.inf, 1e-320],
    },
    "overrides": {"METRICS_URL": "http://x", "": "empty key", "sa_not_sqlalchemy": 1},
    "phase": "all",
    "time_scale": 300.0,
    "signals": ["deployment_started"],
    "signal_dir": None,
}


class Colour(enum.Enum):
    RED = "red"


NOT_PLAIN = [
    {"repository": Path("/tmp/evidence")},
    {"info": {"when": datetime.datetime(2026, 12, 4, 13, 0, tzinfo=datetime.UTC)}},
    {"info": {"colour": Colour.RED}},
    {"info": {1: "an int key"}},
    {"info": {"_sa_instance_state": "dropped by jsonable_encoder"}},
    {"info": {"set": {"a"}}},
    {"info": {"path": PurePosixPath("/a")}},
    {"info": {"uuid": uuid.UUID(int=5)}},
]


def test_plain_parameters_serialize_as_prefects_encoder_does() -> None:
    from fastapi.encoders import jsonable_encoder

    from afdp.pipeline.flow import evidence_flow

    ours = evidence_flow.serialize_parameters(PLAIN)
    assert ours == {key: jsonable_encoder(value) for key, value in PLAIN.items()}
    assert repr(ours) == repr({key: jsonable_encoder(value) for key, value in PLAIN.items()})  # types, -0.0, order
    assert ours["info"]["nested"]["tuple"] == [1, "two"]  # a tuple is sent as a list, as before


@pytest.mark.parametrize("parameters", NOT_PLAIN, ids=lambda p: repr(p)[:40])
def test_other_values_go_through_prefects_encoder(parameters) -> None:
    from prefect import Flow

    from afdp.pipeline.flow import evidence_flow

    assert evidence_flow.serialize_parameters(parameters) == Flow.serialize_parameters(evidence_flow, parameters)


def test_the_sqlalchemy_key_rule_is_kept() -> None:
    # jsonable_encoder drops keys starting with "_sa": so does the flow (through it).
    from afdp.pipeline.flow import evidence_flow

    assert evidence_flow.serialize_parameters({"info": {"_sa_x": 1, "y": 2}}) == {"info": {"y": 2}}


def test_plain_parameters_do_not_import_fastapi() -> None:
    code = (
        "import sys\n"
        "inf = float('inf')\n"
        "from afdp.pipeline.flow import evidence_flow\n"
        f"evidence_flow.serialize_parameters({PLAIN!r})\n"
        "print('fastapi' in sys.modules)\n"
        "evidence_flow.serialize_parameters({'repository': __import__('pathlib').Path('/x')})\n"
        "print('fastapi' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": "http://127.0.0.1:9/api"},
    )
    assert done.stdout.split() == ["False", "True"]  # the fallback still uses it


@pytest.mark.slow
@pytest.mark.xdist_group(PREFECT_GROUP)
def test_the_server_holds_the_parameters_prefect_would_have_sent(prefect_api, tmp_path, repo, keys, tsa):
    from fastapi.encoders import jsonable_encoder
    from infra import scrape_workflow
    from prefect import get_client

    from afdp.demo.service import DemoService
    from afdp.pipeline.flow import evidence_flow, run_with_prefect

    path = tmp_path / "wf.yaml"
    path.write_text(scrape_workflow("params", window="1s", interval="250ms"))
    with prefect_api.in_this_process(), DemoService(name="shop", version="v1") as service:
        params = {
            "workflow_path": str(path),
            "service": "shop",
            "deployment": "params-1",
            "repository": str(repo),
            "key": str(keys / "dev.key"),
            "tsa_urls": [tsa.url],
            "info": {"commit": "abc", "deployer": "ci", "changed_files": ["a.py"], "deployment_size": 3},
            "overrides": {"METRICS_URL": service.metrics_url},
            "time_scale": 1.0,
        }
        outcome = run_with_prefect(params)
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(outcome.context["prefect"]["flow_run_id"]))
    # What Prefect's own encoder makes of the call's parameters, defaults included.
    called = inspect.signature(evidence_flow.fn).bind(**params)
    called.apply_defaults()
    assert flow_run.parameters == {key: jsonable_encoder(value) for key, value in called.arguments.items()}
