"""Text that would show other than it reads never gets signed into evidence.

``afdp import`` signs and commits what a history file says (deployer, version, branch,
changed files, commit message...). DEL, C1 controls, bidi overrides and isolates and
zero-width characters in those fields would be evidence forever, and later render
deceptively (a deployer ``admin\\u202eresu`` reads as another person). One rule
(:func:`afdp.errors.hidden_character`) refuses them, the same for ``afdp run``'s facts and
the intake's events: a bad field is one line naming the file, the row and the field,
exit 2, nothing written. A commit message is free text: the zero-width joiners of an
emoji or a script stay allowed there. Real repositories, the real CLI; nothing mocked.
"""

from __future__ import annotations

import json

import pytest
from test_history_import import _import, _refs
from test_hostile_import import _setup

from afdp.errors import UsageError, hidden_character
from afdp.evidence.names import check_text
from afdp.pipeline.runner.request import DeploymentInfo

GOOD = "2026-01-01T00:00:00Z"
#: name-like fields hold none of these; a commit message holds none but the joiners
HIDDEN = {
    "DEL": "\x7f",
    "C1 CSI": "\x9b",
    "C1 NEL": "\x85",
    "RLO": "\u202e",
    "LRE": "\u202a",
    "RLI": "\u2067",
    "PDI": "\u2069",
    "ZWSP": "\u200b",
    "LRM": "\u200e",
    "ESC": "\x1b",
    "line separator": "\u2028",
}


def _refused(result, path, where: str, char: str) -> str:
    line = result.err.strip()
    assert result.code == 2, (result.out, result.err)
    assert len(line.splitlines()) == 1 and str(path) in line and where in line, line
    assert f"U+{ord(char):04X}" in line and char not in line, line  # named, never printed raw
    return line


CSV_FIELDS = ["deployer", "environment", "version", "branch", "commit_message", "changed_files", "service"]


@pytest.mark.parametrize("field", CSV_FIELDS)
@pytest.mark.parametrize("kind", ["DEL", "C1 CSI", "RLO", "RLI", "ZWSP"])
def test_csv_field_with_a_hidden_character_is_refused_whole(tmp_path, cli, keys, tsa, field, kind):
    repo, workflow = _setup(tmp_path, cli)
    char = HIDDEN[kind]
    bad = tmp_path / "history.csv"
    # the first row is good: it must not be imported before the second is refused
    bad.write_text(f"deployed_at,id,{field}\n{GOOD},ok1,fine\n2026-01-02T00:00:00Z,ok2,adm{char}in\n", encoding="utf-8")
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(bad))
    _refused(result, bad, f"row 3, {field}", char)
    assert _refs(repo) == {}


GITHUB_FIELDS = {
    "creator.login": lambda v: {"creator": {"login": v}},
    "environment": lambda v: {"environment": v},
    "ref": lambda v: {"ref": v},
    "description": lambda v: {"description": v},
    "payload.version": lambda v: {"payload": {"version": v}},
    "payload.changed_files": lambda v: {"payload": {"changed_files": ["src/a.py", v]}},
}


@pytest.mark.parametrize("field", sorted(GITHUB_FIELDS))
def test_github_deployment_field_with_a_bidi_override_is_refused(tmp_path, cli, keys, tsa, field):
    repo, workflow = _setup(tmp_path, cli)
    bad = tmp_path / "deployments.json"
    entry = {"id": 7, "created_at": GOOD, "sha": "a" * 40, **GITHUB_FIELDS[field]("evil\u202etxt.exe")}
    bad.write_text(json.dumps([entry]))
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--github-deployments", str(bad))
    _refused(result, bad, f"entry 0 (id 7), {field}", "\u202e")
    assert _refs(repo) == {}


@pytest.mark.parametrize("field", ["tag_name", "name", "author.login", "target_commitish"])
def test_github_release_field_with_a_c1_control_is_refused(tmp_path, cli, keys, tsa, field):
    repo, workflow = _setup(tmp_path, cli)
    bad = tmp_path / "releases.json"
    entry = {"id": 8, "created_at": GOOD, "published_at": GOOD, "tag_name": "v1", "target_commitish": "main"}
    value = "v1\x9b2K"
    if field == "author.login":
        entry["author"] = {"login": value}
    else:
        entry[field] = value
    bad.write_text(json.dumps([entry]))
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--github-releases", str(bad))
    _refused(result, bad, f"entry 0 (id 8), {field}", "\x9b")
    assert _refs(repo) == {}


def test_real_histories_still_import(tmp_path, cli, keys, tsa):
    """The negative: accents, scripts, emoji (with their zero-width joiners, in a
    commit message), no-break spaces and brackets are what real histories hold."""
    repo, workflow = _setup(tmp_path, cli)
    good = tmp_path / "history.csv"
    good.write_text(
        "deployed_at,id,deployer,version,branch,changed_files,commit_message\n"
        f"{GOOD},r1,José Müller,v1.2\u00a0rc,feature/中文,src/é.py;docs/[x].md,"
        "fix: 👨\u200d👩\u200d👧 family emoji; \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 [bold]ok[/]\n",
        encoding="utf-8",
    )
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(good), extra=("--dry-run",))
    assert result.code == 0, result.err
    assert [d["status"] for d in result.json()["deployments"]] == ["would_import"]


def test_a_joiner_is_free_text_only(tmp_path, cli, keys, tsa):
    """A zero-width joiner in a commit message is text; in a deployer's name it hides."""
    repo, workflow = _setup(tmp_path, cli)
    bad = tmp_path / "history.csv"
    bad.write_text(f"deployed_at,id,deployer\n{GOOD},r1,ad\u200dmin\n", encoding="utf-8")
    result = _import(cli, repo, keys, tsa, "http://127.0.0.1:1", workflow, "--csv", str(bad))
    _refused(result, bad, "row 2, deployer", "\u200d")


@pytest.mark.parametrize("kind", sorted(HIDDEN))
def test_one_rule_for_every_way_facts_arrive(kind):
    """``afdp run``'s options, an event and a history share it: facts are checked in
    DeploymentInfo.from_json (the run's and the intake's path) with the same rule."""
    char = HIDDEN[kind]
    assert hidden_character(f"a{char}b") == char
    assert hidden_character(f"a{char}b", free_text=True) == char
    for fact in ("deployer", "version", "branch", "environment", "commit", "source_repository", "commit_message"):
        with pytest.raises(UsageError, match=f"deployment {fact} holds U\\+{ord(char):04X}"):
            DeploymentInfo.from_json({fact: f"x{char}y"})
    with pytest.raises(UsageError, match="deployment changed file holds"):
        DeploymentInfo.from_json({"changed_files": ["ok.py", f"x{char}.py"]})
    with pytest.raises(UsageError):
        check_text(f"x{char}", what="service")


def test_facts_real_deployments_carry_are_accepted():
    info = DeploymentInfo.from_json({"deployer": "José", "branch": "feature/中文", "changed_files": ["src/[a].py"],
                                     "commit_message": "ship 👩\u200d💻 [bold]x[/]", "version": "v1\u00a0rc"})
    assert info.deployer == "José" and info.commit_message.startswith("ship")


def test_afdp_run_refuses_a_hidden_character_in_a_fact_before_writing(tmp_path, cli, keys, tsa):
    repo, workflow = _setup(tmp_path, cli)
    result = cli("run", str(workflow), "--repo", str(repo), "--service", "api", "--deployment", "d-1",
                 "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--deployer", "bob\u202ecod.exe", "--no-prefect")
    line = result.err.strip()
    assert result.code == 2 and len(line.splitlines()) == 1, (result.out, result.err)
    assert "deployment deployer holds U+202E" in line and "\u202e" not in line, line
    assert _refs(repo) == {}


@pytest.mark.parametrize("kind", ["DEL", "C1 CSI", "RLO", "PDI", "ZWSP", "ESC"])
def test_the_intake_refuses_what_import_refuses(kind):
    """An event (afdp serve) follows the same rule: 400, naming the field."""
    from afdp.service.intake import EventRejected
    from afdp.service.intake import check_text as check_event

    with pytest.raises(EventRejected, match=r"event\.deployer holds a control character") as caught:
        check_event({"deployer": f"a{HIDDEN[kind]}b"}, "event")
    assert caught.value.status == 400
    with pytest.raises(EventRejected):
        check_event({"deployer": "a\udc00b"}, "event")  # a lone surrogate (JSON can carry one)
    check_event({"deployer": "José", "commit_message": "ship 👩\u200d💻"}, "event")  # the negative
    with pytest.raises(EventRejected):
        check_event({"deployer": "ad\u200dmin"}, "event")  # a joiner is free text only


@pytest.mark.parametrize(
    ("option", "value", "char"),
    [("--summary", "ok\nAFDP-Kind: seal", "\n"), ("--summary", "ok \x1b[2K", "\x1b"), ("--summary", "ok\u202e", "\u202e"),
     ("--author", "Eve\u202e <eve@example.com>", "\u202e"), ("--author", "Eve\x85 <eve@example.com>", "\x85")],
    ids=["summary-newline", "summary-esc", "summary-bidi", "author-bidi", "author-c1"],
)
def test_afdp_record_refuses_summary_and_author_that_would_not_read_as_they_show(tmp_path, cli, repo, keys, tsa, option, value, char):
    """A summary is the record commit's subject in ``git log``; an author its author line."""
    result_file = tmp_path / "result.json"
    result_file.write_text('{"ok": true}')
    common = ("record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--key", str(keys / "dev.key"),
              "--tsa", tsa.url)
    result = cli(*common, "--step", "s", "--result", str(result_file), option, value)
    line = result.err.strip()
    assert result.code == 2 and len(line.splitlines()) == 1, (result.out, result.err)
    assert f"U+{ord(char):04X}" in line and char not in line, line
    assert _refs(repo) == {}
    fine = cli(*common, "--step", "s", "--result", str(result_file), "--summary", "p99 +12% [ok] é 👩\u200d💻",
               "--author", "José <jose@example.com>")
    assert fine.code == 0, fine.err


def test_afdp_record_batch_refuses_a_hidden_summary_before_writing(tmp_path, cli, repo, keys, tsa):
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"step": "a", "result": {}, "summary": "fine"}) + "\n"
                     + json.dumps({"step": "b", "result": {}, "summary": "VERIFIED\u2066"}) + "\n")
    result = cli("record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--key", str(keys / "dev.key"),
                 "--tsa", tsa.url, "--batch", str(batch))
    line = result.err.strip()
    assert result.code == 2 and "record 2 summary holds U+2066" in line, line
    assert _refs(repo) == {}
