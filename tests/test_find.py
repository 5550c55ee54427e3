"""``afdp find`` and the decision record's subject: what happened when this commit or
image was deployed, answered from an index that a tampered copy cannot change, and the
deployed artifact named as the in-toto subject a standard DSSE reader sees."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from tamper import edit, with_file

from afdp.audit.find import INDEX_FILE, find_deployments, make_query, refresh_index
from afdp.evidence.canonical import canonical_bytes
from afdp.evidence.records import envelope_json, pae
from afdp.evidence.signing import load_signer, sign_bytes
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

PERMISSIVE = "version: 1\nname: test-permissive\nallowed_collector_types: [prometheus, scrape, sql, rest]\n"
SHIP = """\
name: ship
version: "1"
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - decisions
decisions:
  ship_it:
    condition: deployment.service == 'api'
    action: mark_successful
  hold_it:
    condition: deployment.service != 'api'
    action: rollback
"""
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
IMAGE_X = "ghcr.io/acme/api:v1@sha256:" + "1" * 64
IMAGE_Y = "ghcr.io/acme/api:v2@sha256:" + "2" * 64


@pytest.fixture()
def run_ship(tmp_path: Path, cli, repo: Path, keys: Path, tsa):
    workflow = tmp_path / "ship.yaml"
    workflow.write_text(SHIP)
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)

    def run(deployment: str, *extra: str, service: str = "api"):
        return cli(
            "run", str(workflow), "--policy", str(policy), "--service", service, "--deployment", deployment,
            "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--fast", "--no-prefect", "--json", *extra,
        )  # fmt: skip

    return run


def record_files(repo: Path, deployment: str, step: str, service: str = "api") -> dict[str, bytes]:
    listed = subprocess.run(
        ["git", "--git-dir", str(repo / ".git") if (repo / ".git").exists() else str(repo), "ls-tree", "-r", "--name-only", f"afdp/{service}/{deployment}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    [path] = [p for p in listed if p.endswith(f"-{step}/envelope.json")]
    shown = subprocess.run(["git", "-C", str(repo), "show", f"afdp/{service}/{deployment}:{path}"], capture_output=True, check=True).stdout
    return {"envelope.json": shown}


@pytest.fixture()
def index_key(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "auditor-home" / "index.key"
    monkeypatch.setenv("AFDP_INDEX_KEY", str(path))
    return path


# -- the decision record's subject ----------------------------------------------------


def test_decision_record_names_the_deployed_image_and_commit_as_its_in_toto_subject(run_ship, cli, repo, keys, trust_file, tmp_path):
    central = tmp_path / "central.git"
    assert cli("init", str(central), "--bare").code == 0
    ran = run_ship("d-1", "--commit", COMMIT_A, "--image", IMAGE_X, "--push", central.as_uri())
    assert ran.code == 0, ran.err
    assert ran.json()["push"]["report"]["branches"][0]["outcome"] == "created"
    # a policy engine with nothing but the remote, git and a standard DSSE library
    envelope = Envelope.from_dict(json.loads(record_files(central, "d-1", "decisions")["envelope.json"]))
    key = SSlibKey.from_crypto(load_pem_public_key((keys / "dev.key.pub").read_bytes()))
    assert envelope.verify([key], 1)  # raises unless the signature holds
    assert envelope.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][1:] == [
        {"name": "ghcr.io/acme/api", "digest": {"sha256": "1" * 64}},
        {"digest": {"gitCommit": COMMIT_A}},
    ]
    assert statement["predicate"]["result"]["decision"]["action"] == "mark_successful"
    assert statement["predicate"]["context"]["deployed_artifact"] == {"image": IMAGE_X, "commit": COMMIT_A}
    # only the decision record names the artifact; the branch verifies as before
    mark = json.loads(base64.b64decode(json.loads(record_files(central, "d-1", "mark_deployment_time")["envelope.json"])["payload"]))
    assert len(mark["subject"]) == 1
    assert check_branch(central, service="api", deployment="d-1", policy=load_trust_policy(trust_file)).ok


def test_a_short_commit_and_no_image_name_no_artifact(run_ship, repo):
    assert run_ship("d-2", "--commit", "abc1234").code == 0
    statement = json.loads(base64.b64decode(json.loads(record_files(repo, "d-2", "decisions")["envelope.json"])["payload"]))
    assert len(statement["subject"]) == 1 and "deployed_artifact" not in statement["predicate"]["context"]


def test_image_must_be_named_by_digest(run_ship):
    result = run_ship("d-3", "--image", "ghcr.io/acme/api:latest")
    assert result.code == 2 and "must name a digest" in result.err


def test_identity_fails_a_subject_that_is_not_the_artifact_the_context_names(run_ship, repo, keys, trust_file):
    """Even re-signed by the trusted key, a decision record whose subject names another
    image than its signed context fails check 4 (identity)."""
    assert run_ship("d-1", "--commit", COMMIT_A, "--image", IMAGE_X).code == 0
    signer = load_signer(str(keys / "dev.key"))

    def swap_subject(entry):
        statement = json.loads(base64.b64decode(json.loads(entry.files["envelope.json"])["payload"]))
        statement["subject"][1]["digest"]["sha256"] = "9" * 64
        payload = canonical_bytes(statement)
        signature = sign_bytes(signer, pae("application/vnd.in-toto+json", payload))
        return with_file(entry, "envelope.json", envelope_json(payload, json.loads(entry.files["envelope.json"])["signatures"][0]["keyid"], signature))

    position = next(i for i, line in enumerate(subprocess.run(["git", "-C", str(repo), "log", "--reverse", "--format=%s", "afdp/api/d-1"], capture_output=True, text=True, check=True).stdout.splitlines()) if line.startswith("decisions"))
    edit(repo, position, swap_subject, deployment="d-1")
    report = check_branch(repo, service="api", deployment="d-1", policy=load_trust_policy(trust_file))
    assert any(f.check == "identity" and "not the deployed artifact" in f.reason for f in report.failures), report.failures


def test_run_push_to_an_unreachable_remote_still_succeeds_with_a_warning(run_ship, cli, repo, tmp_path):
    nowhere = tmp_path / "not-yet.git"
    ran = run_ship("d-1", "--push", str(nowhere))
    assert ran.code == 0, ran.err
    assert "afdp: warning: evidence kept locally, not pushed" in ran.err
    assert ran.json()["push"]["queued"]
    assert cli("init", str(nowhere), "--bare").code == 0
    sent = cli("push", "--repo", str(repo), "--pending", "--json")
    assert sent.code == 0 and sent.json()["remotes"][0]["branches"][0]["outcome"] == "created"


# -- afdp find -----------------------------------------------------------------------


@pytest.fixture()
def fleet3(run_ship, repo):
    assert run_ship("d-1", "--commit", COMMIT_A, "--image", IMAGE_X, "--deployed-at", "2026-01-10T10:00:00Z").code == 0
    assert run_ship("d-2", "--commit", COMMIT_B, "--image", IMAGE_Y, "--deployed-at", "2026-06-10T10:00:00Z").code == 0
    # the same commit deployed to another service, judged a rollback there
    assert run_ship("w-1", "--commit", COMMIT_A, "--deployed-at", "2026-03-01T08:00:00Z", service="web").code == 1
    return repo


def hits(result) -> list[tuple[str, str]]:
    return [(h["service"], h["deployment"]) for h in result.json()["hits"]]


def test_find_by_commit_image_service_and_since(cli, fleet3, trust_file, index_key):
    repo = str(fleet3)
    by_commit = cli("find", "--repo", repo, "--commit", COMMIT_A[:10], "--trust", str(trust_file), "--json")
    assert by_commit.code == 0, by_commit.err
    assert hits(by_commit) == [("web", "w-1"), ("api", "d-1")]  # newest first
    web, api = by_commit.json()["hits"]
    assert web["decision"]["action"] == "rollback" and api["decision"]["action"] == "mark_successful"
    assert (api["time"], api["verification"], api["image"]) == ("2026-01-10T10:00:00.000Z", "verified", IMAGE_X)
    assert api["subjects"] == [{"name": "ghcr.io/acme/api", "digest": {"sha256": "1" * 64}}, {"digest": {"gitCommit": COMMIT_A}}]
    assert hits(cli("find", "--repo", repo, "--image", "sha256:" + "2" * 64, "--json")) == [("api", "d-2")]
    assert hits(cli("find", "--repo", repo, "--image", "ghcr.io/acme/other@sha256:" + "2" * 64, "--json")) == []
    assert hits(cli("find", "--repo", repo, "--service", "api", "--since", "2026-02-01", "--json")) == [("api", "d-2")]
    assert hits(cli("find", "--repo", repo, "--service", "api", "--json")) == [("api", "d-2"), ("api", "d-1")]
    unverified = cli("find", "--repo", repo, "--commit", COMMIT_B, "--json").json()["hits"][0]
    assert unverified["verification"] == "unverified"
    human = cli("find", "--repo", repo, "--commit", COMMIT_B)
    assert human.code == 0 and "api\td-2\t2026-06-10T10:00:00.000Z\tmark_successful (ship_it)\tUNVERIFIED" in human.out
    none = cli("find", "--repo", repo, "--commit", "c" * 40)
    assert none.code == 0 and "no deployment found" in none.out


def test_a_hit_whose_branch_fails_verification_says_so_and_exits_1(cli, fleet3, trust_file, index_key):
    edit(fleet3, 1, lambda e: with_file(e, "timestamp-0.tsr", e.files["timestamp-0.tsr"] + b"\x00"), deployment="d-2")
    result = cli("find", "--repo", str(fleet3), "--image", IMAGE_Y, "--trust", str(trust_file), "--json")
    assert result.code == 1
    [hit] = result.json()["hits"]
    assert hit["verification"] == "failed" and hit["first_failure"]


def test_a_tampered_index_does_not_change_an_answer(fleet3, index_key):
    queries = [make_query(commit=COMMIT_A, image=None, service=None, since=None), make_query(commit=None, image=IMAGE_Y, service=None, since=None)]
    before = [find_deployments(fleet3, q).to_json()["hits"] for q in queries]
    path = fleet3 / ".git" / INDEX_FILE
    document = json.loads(path.read_text())
    entries = document["entries"]
    entries["refs/heads/afdp/api/d-1"]["facts"]["commit"] = "f" * 40  # hide a deployment
    entries["refs/heads/afdp/api/d-2"]["facts"]["commit"] = COMMIT_A  # invent one
    entries["refs/heads/afdp/web/w-1"]["facts"]["decision"] = {"action": "mark_successful"}  # change a verdict
    path.write_text(json.dumps(document))
    after = [find_deployments(fleet3, q) for q in queries]
    assert [a.to_json()["hits"] for a in after] == before
    assert after[0].index.rejected == 3 and after[0].index.read == 3
    assert after[1].index.reused == 3 and after[1].index.rejected == 0  # rebuilt from the evidence


def test_the_index_is_reused_read_again_when_a_head_moves_and_rebuilt_without_its_key(fleet3, index_key, signer, tsa):
    from conftest import add_step

    first = refresh_index(fleet3)[1]
    assert (first.read, first.reused, first.written) == (3, 0, True)
    assert refresh_index(fleet3)[1].reused == 3
    add_step(fleet3, signer, tsa, "note", {"x": 1}, deployment="d-9")  # a new branch
    new = refresh_index(fleet3)[1]
    assert (new.read, new.reused) == (1, 3)
    assert refresh_index(fleet3)[1].reused == 4
    add_step(fleet3, signer, tsa, "note2", {"x": 2}, deployment="d-9")  # its head moves
    moved = refresh_index(fleet3)[1]
    assert (moved.read, moved.reused) == (1, 3)
    index_key.unlink()  # another auditor, or a lost key: nothing in the index is trusted
    rebuilt = refresh_index(fleet3)[1]
    assert (rebuilt.rejected, rebuilt.read) == (4, 4)
    assert index_key.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --commit"),
        (("--commit", "xyz"), "7 to 64 hex digits"),
        (("--image", "api:latest"), "must name a digest"),
        (("--service", "api", "--since", "last week"), "is not a date"),
        (("--service", "a/b"), "invalid service name"),
    ],
)
def test_find_bad_input_is_one_line_and_exit_2(cli, repo, index_key, args, message):
    result = cli("find", "--repo", str(repo), *args)
    assert result.code == 2, (result.out, result.err)
    assert message in result.err and len(result.err.strip().splitlines()) == 1


GATED = """\
name: gated
version: "1"
workflow:
  deployment:
    - mark_deployment_time
  post_deployment:
    - gate:
        condition: deployment.service == 'api'
        action: rollback
    - decisions
decisions:
  ship_it:
    condition: deployment.service == 'api'
    action: mark_successful
"""


def test_a_gate_that_stops_the_run_names_the_artifact_and_push_follows_a_rollback(cli, tmp_path, repo, keys, tsa, monkeypatch, index_key):
    workflow = tmp_path / "gated.yaml"
    workflow.write_text(GATED)
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    central = tmp_path / "central.git"
    assert cli("init", str(central), "--bare").code == 0
    monkeypatch.setenv("AFDP_EVIDENCE_REMOTE", str(central))  # the remote from the environment
    ran = cli(
        "run", str(workflow), "--policy", str(policy), "--service", "api", "--deployment", "g-1", "--repo", str(repo),
        "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--fast", "--no-prefect", "--json", "--image", IMAGE_Y,
    )  # fmt: skip
    assert ran.code == 1, ran.err  # rollback: the run fails the CI step, and still pushes
    assert ran.json()["push"]["report"]["branches"][0]["outcome"] == "created"
    statement = json.loads(base64.b64decode(json.loads(record_files(central, "g-1", "gate")["envelope.json"])["payload"]))
    assert statement["subject"][1:] == [{"name": "ghcr.io/acme/api", "digest": {"sha256": "2" * 64}}]
    [hit] = find_deployments(central, make_query(commit=None, image=IMAGE_Y, service=None, since=None)).hits
    assert hit.facts.decision["action"] == "rollback" and hit.facts.subjects == statement["subject"][1:]


def test_index_entries_of_branches_that_are_gone_are_dropped(fleet3, index_key):
    import pygit2

    refresh_index(fleet3)
    pygit2.Repository(str(fleet3)).references.delete("refs/heads/afdp/web/w-1")
    facts, stats = refresh_index(fleet3)
    assert [f.deployment for f in facts] == ["d-1", "d-2"] and stats.written
    assert "w-1" not in (fleet3 / ".git" / INDEX_FILE).read_text()


def test_post_phase_naming_another_image_than_the_pre_phase_is_refused(cli, tmp_path, repo, keys, tsa):
    workflow = tmp_path / "phased.yaml"
    workflow.write_text(SHIP.replace("workflow:\n", "workflow:\n  pre_deployment:\n    - wait: 1s\n", 1))
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)

    def run(phase: str, image: str):
        return cli(
            "run", str(workflow), "--policy", str(policy), "--service", "api", "--deployment", "p-1", "--repo", str(repo),
            "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--fast", "--no-prefect", "--phase", phase, "--image", image,
        )  # fmt: skip

    assert run("pre", IMAGE_X).code == 0
    other = run("post", IMAGE_Y)
    assert other.code == 2 and "image" in other.err and "one deployment's evidence must tell one story" in other.err
    assert run("post", IMAGE_X).code == 0
