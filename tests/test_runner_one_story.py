"""One deployment, one story: a deployment's branch is never continued, nor re-run, for
another deployment (real Git, real TSA over loopback HTTP, the real CLI).

Before, re-running a SEALED deployment with another commit, environment or deployer
printed "already recorded; sealed" and exited 0 with the old decision: a CI step for a
new commit read the old deployment's verdict as its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"

WORKFLOW = """\
name: one_story
version: "1"
workflow:
  deployment:
    - mark_deployment_time
    - capture_deployment_metadata: [git_commit, deployer_id]
"""


def _run(cli, tmp_path: Path, keys: Path, tsa, *facts: str):
    if not (tmp_path / "evidence").exists():
        assert cli("init", str(tmp_path / "evidence")).code == 0
    workflow, policy = tmp_path / "wf.yaml", tmp_path / "policy.yaml"
    workflow.write_text(WORKFLOW)
    policy.write_text(PERMISSIVE)
    return cli(
        "run", str(workflow), "--service", "api", "--deployment", "d-7", "--repo", str(tmp_path / "evidence"),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--policy", str(policy), "--no-prefect", "--json", *facts,
    )


def _heads(tmp_path: Path) -> dict[str, str]:
    import pygit2

    repo = pygit2.Repository(str(tmp_path / "evidence"))
    return {name: str(repo.references[name].target) for name in repo.references if name.startswith("refs/heads/")}


FACTS = ["--commit", "abc1234", "--deployer", "alice", "--environment", "production"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--commit", "fff9999"], "commit 'abc1234'; this run says 'fff9999'"),
        (["--deployer", "mallory"], "deployer 'alice'; this run says 'mallory'"),
        (["--environment", "staging"], "environment 'production'; this run says 'staging'"),
        (["--version", "v2"], "no version; this run says 'v2'"),
    ],
    ids=["commit", "deployer", "environment", "version-not-recorded"],
)
def test_rerunning_a_sealed_deployment_with_other_facts_is_refused(cli, tmp_path, keys, tsa, change, named):
    first = _run(cli, tmp_path, keys, tsa, *FACTS)
    assert first.code == 0, first.err
    assert json.loads(first.out)["sealed"] is True
    before = _heads(tmp_path)
    facts = list(FACTS)
    for flag, value in zip(change[::2], change[1::2], strict=True):
        if flag in facts:
            facts[facts.index(flag) + 1] = value
        else:
            facts += [flag, value]
    again = _run(cli, tmp_path, keys, tsa, *facts)
    assert again.code == 2, (again.code, again.out, again.err)
    assert named in again.err and "one story" in again.err
    assert len(again.err.strip().splitlines()) == 1
    assert _heads(tmp_path) == before  # nothing written


def test_rerunning_a_sealed_deployment_with_the_same_facts_writes_nothing(cli, tmp_path, keys, tsa):
    assert _run(cli, tmp_path, keys, tsa, *FACTS).code == 0
    before = _heads(tmp_path)
    again = _run(cli, tmp_path, keys, tsa, *FACTS)
    assert again.code == 0, again.err
    assert json.loads(again.out)["sealed"] is True
    assert _heads(tmp_path) == before
    # facts not given again are not a difference
    assert _run(cli, tmp_path, keys, tsa, "--commit", "abc1234").code == 0
    assert _heads(tmp_path) == before
