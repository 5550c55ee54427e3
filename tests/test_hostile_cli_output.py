"""Every command shows evidence text as text: never as terminal controls, never as markup.

Service facts, metric names, teams, workflow keys and history states are written by
someone else (a signer, a history file, a colleague's workflow). Printed raw, an ESC
sequence erases the line above and a bidi override reorders it; read as rich markup,
``[bold red]VERIFIED[/]`` prints a verdict AFDP never gave. The CLI prints for a human
only through :mod:`afdp.cli.output` (checked below, module by module), which shows such
characters as escapes and reads no markup; ``--json`` keeps the exact characters.
Real repositories, real time-stamps, the real CLI in its own process; nothing mocked.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: cursor up, erase the line, a verdict in rich markup, a right-to-left override
ATTACK = "\x1b[1A\x1b[2K[bold red]VERIFIED[/]\u202e"
SHOWN = "\\x1b[1A\\x1b[2K[bold red]VERIFIED[/]\\u202e"
_CLI = "import sys; from afdp.cli import main; sys.exit(main())"
CLI_DIR = Path(__file__).resolve().parent.parent / "afdp" / "cli"


def afdp(*args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    """The real CLI; ``terminal``: rich draws as on a terminal (colours, tables)."""
    env = {**os.environ, "COLUMNS": "400"}
    env.pop("FORCE_COLOR", None)
    if terminal:
        env["FORCE_COLOR"] = "1"
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=300,
                          check=False, env=env)


def assert_shown_not_obeyed(text: str, shown: str = SHOWN) -> None:
    assert "\x1b[1A" not in text and "\x1b[2K" not in text and "\u202e" not in text, text[-3000:]
    assert shown in text, text[-3000:]  # the characters are there, as escapes; the markup as itself


def _strings(value: object):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def assert_exact(document: object, raw: str = ATTACK) -> None:
    """--json holds the exact characters (JSON escapes them itself, ``\\u001b``)."""
    assert any(raw in text for text in _strings(document)), document


# --- the one way to print ------------------------------------------------------------------------


def _offences(path: Path) -> list[str]:
    """Calls in a CLI module that could print evidence text past afdp.cli.output."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("rich.console", "rich.markup"):
            found.append(f"{path.name}:{node.lineno}: imports {node.module}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = ast.unparse(func)
        # a literal, or a module constant (INTERRUPTED): no evidence text in it
        literal = all(isinstance(a, ast.Constant) or (isinstance(a, ast.Name) and a.id.isupper()) for a in node.args)
        if name in ("print", "sys.stdout.write", "sys.stderr.write", "click.secho", "Console", "Text.from_markup"):
            found.append(f"{path.name}:{node.lineno}: {name}(...)")
        elif name == "click.echo" and not literal:
            # the error handler of afdp/cli/__init__.py shows every message with visible()
            # (``shown``: its lines, each through visible)
            text = ast.unparse(node)
            if not (path.name == "__init__.py" and any(ok in text for ok in ("visible(", "json.dumps(", "{shown}"))):
                found.append(f"{path.name}:{node.lineno}: click.echo({ast.unparse(node.args[0]) if node.args else ''})")
    return found


def test_no_command_prints_past_the_output_module():
    """A new command cannot forget to escape: printing is afdp.cli.output's echo, console,
    plain_rows and emit_json, and nothing else (a constant string excepted)."""
    modules = sorted(p for p in CLI_DIR.glob("*.py") if p.name != "output.py")
    assert len(modules) > 10
    assert [offence for path in modules for offence in _offences(path)] == []


def test_the_guard_finds_what_it_forbids(tmp_path):
    """Negative of the guard above: each way around the output module is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import click, sys\nfrom rich.console import Console\n"
        "def f(x):\n    print(x)\n    click.echo(x)\n    Console().print(x)\n    sys.stdout.write(x)\n    click.echo('fine')\n"
    )
    assert len(_offences(bad)) == 5


def test_console_reads_no_markup_and_shows_hidden_characters(capsys):
    from rich.table import Table

    from afdp.cli import output

    out = output.console()
    out.print(ATTACK)
    out.print(ATTACK, markup=True)  # asked for markup: still text
    table = Table("name", title=ATTACK)
    table.add_row(ATTACK)
    out.print(table)
    out.print(output.line(("FAILED", "bold red"), " ", ATTACK))
    printed = capsys.readouterr().out
    assert_shown_not_obeyed(printed)
    assert printed.count("VERIFIED[/]") == 5 and ":smiley:" not in printed


def test_echo_shows_a_line_break_and_plain_rows_keep_one_line_per_row(capsys):
    from afdp.cli import output

    output.echo("reason: x\nVERIFIED api/d-1" + ATTACK)
    output.plain_rows(["a", "b"], [("x\ny", ATTACK)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reason: x\\x0aVERIFIED api/d-1" + SHOWN
    assert out[1:] == ["a\tb", "x\\x0ay\t" + SHOWN]


def test_plain_text_is_unchanged(capsys):
    """The negative: what real evidence holds (accents, scripts, brackets) prints as itself."""
    from afdp.cli import output

    text = "décision [x] 中文 — ok"
    output.echo(text)
    output.console().print(text)
    assert capsys.readouterr().out == f"{text}\n{text}\n"


def test_serve_log_lines_show_request_text_as_text():
    """``afdp serve`` logs delivery ids and errors that came with requests."""
    from afdp.cli.output import show_log_records

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("afdp.serve")
    logger.addHandler(handler)
    try:
        show_log_records("afdp.serve")
        show_log_records("afdp.serve")  # idempotent
        logger.warning("afdp serve: delivery %s failed: %s", ATTACK, "bad\nline")
        logger.warning("afdp serve: resuming %d queued event(s)", 3)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [f"afdp serve: delivery {SHOWN} failed: bad\\x0aline",
                                              "afdp serve: resuming 3 queued event(s)"]


# --- real evidence whose text an attacker chose ------------------------------------------------


@pytest.fixture(scope="module")
def hostile_history(tmp_path_factory, keys, tsa):
    """Twenty verified deployments (a model needs them) whose environment and metric name
    carry ATTACK (half of them: insights compare the groups), and one whose genesis names
    a team ATTACK."""
    from test_learn_dataset import SECONDS, metric_doc

    from afdp.evidence import records as rec
    from afdp.evidence.ledger import append_record, seal
    from afdp.evidence.signing import load_signer
    from afdp.evidence.store import init_repository
    from afdp.evidence.trust import write_trust_policy
    from afdp.pipeline.training import build_training_record

    root = tmp_path_factory.mktemp("hostile")
    repo = root / "evidence"
    init_repository(repo)
    trust = root / "trust.yaml"
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    signer = load_signer(str(keys / "dev.key"))
    urls = [tsa.url]
    metric = "latency" + ATTACK
    for i in range(20):
        degraded = i % 3 == 0
        deployed_at = f"2026-11-{1 + i:02d}T{(8 + 3 * i) % 24:02d}:00:00.000Z"
        info = {"commit": "c0ffee1", "environment": ("prod" + ATTACK) if i % 2 else "staging", "version": "v1",
                "changed_files": ["src/app.py"], "deployment_size": 10 + 7 * i, "deployer": "ci", "deployed_at": deployed_at}
        deployment = f"d-{i}"

        def add(step: str, result: dict, deployment=deployment, info=info) -> dict:
            written = append_record(repo, service="api", deployment=deployment, signer=signer, tsa_urls=urls,
                                    draft=rec.RecordDraft(kind=rec.KIND_STEP, step=step, result=result),
                                    genesis_metadata={"deployment": info})
            return {"step": step, "sequence": written[-1].sequence, "sha256": written[-1].envelope_sha256}

        cited = [add("mark_deployment_time", {"outputs": {"deployed_at": deployed_at}})]
        metrics = {metric: metric_doc(0.1, 0.16 + i / 100 if degraded else 0.101 + i / 1000, degraded=degraded, unit=SECONDS)}
        analysis = {"metrics": metrics, "summary": {"any_degradation": degraded, "significant_degradation": degraded,
                                                    "all_metrics_within_normal": not degraded, "inconclusive": []}}
        cited.append(add("analyze_differences", {"analysis": analysis, "outputs": {}}))
        decision = {"decision": "rollback_on_regression" if degraded else "all_clear",
                    "action": "rollback" if degraded else "mark_successful",
                    "label": "regression_rolled_back" if degraded else "safe_deployment", "success_criteria_met": not degraded}
        cited.append(add("decisions", {"decision": decision}))
        record = build_training_record(deployment={"service": "api", "id": deployment, **info}, analysis=analysis,
                                       decision=decision, cited=cited)
        add("generate_training_record", {"record": record, "record_type": "training"})
        seal(repo, service="api", deployment=deployment, signer=signer, tsa_urls=urls)
    append_record(repo, service="web", deployment="d-team", signer=signer, tsa_urls=urls,
                  genesis_metadata={"deployment": {"commit": "abcdef1", "team": "t" + ATTACK}},
                  draft=rec.RecordDraft(kind=rec.KIND_STEP, step="mark_deployment_time", result={"outputs": {}}))
    return repo, trust


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_find(hostile_history, terminal):
    repo, _ = hostile_history
    result = afdp("find", "--repo", str(repo), "--commit", "abcdef1", terminal=terminal)
    assert result.returncode == 0 and "d-team" in result.stdout, result.stderr
    assert_shown_not_obeyed(result.stdout, "t" + SHOWN)
    document = json.loads(afdp("find", "--repo", str(repo), "--commit", "abcdef1", "--json").stdout)
    assert_exact(document, "t" + ATTACK)


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_push_refusal_quotes_the_failure_as_text(hostile_history, tmp_path, terminal):
    """A branch whose genesis names a team outside the rule fails verification; ``push
    --trust`` refuses it and quotes the failure, markup included, as text."""
    repo, trust = hostile_history
    remote = tmp_path / "central.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    args = ("push", "--repo", str(repo), "--remote", str(remote), "--branch", "afdp/web/d-team", "--trust", str(trust))
    result = afdp(*args, terminal=terminal)
    assert result.returncode == 1 and "refused" in result.stdout, result.stderr
    assert_shown_not_obeyed(result.stdout, "t" + SHOWN)
    document = json.loads(afdp(*args, "--json").stdout)
    assert document["remotes"][0]["branches"][0]["outcome"] == "refused"


#: the learning commands, their arguments and the evidence text each shows
LEARNING = {
    "similar": (("--deployment", "d-1", "-k", "11"), "prod"),  # why similar: the environment
    "insights": ((), "latency"),  # the outcome: the metric's name
    "predict": (("--change-size", "40", "--changed-files", "3", "--kinds", "code", "--at", "2026-12-01T10:00:00Z",
                 "--environment", "staging"), "latency"),  # the impact table: the metric's name
}


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
@pytest.mark.parametrize("command", sorted(LEARNING))
def test_learning_commands(hostile_history, command, terminal):
    repo, trust = hostile_history
    extra, prefix = LEARNING[command]
    args = (command, "--repo", str(repo), "--trust", str(trust), "--service", "api", *extra)
    result = afdp(*args, terminal=terminal)
    assert result.returncode == 0, result.stderr
    assert_shown_not_obeyed(result.stdout, prefix + SHOWN)
    assert_exact(json.loads(afdp(*args, "--json").stdout), prefix + ATTACK)


def test_dataset_export_and_replay_say_nothing_raw(hostile_history, tmp_path):
    """The dataset's own file keeps the exact text (it is data); what is printed shows it."""
    repo, trust = hostile_history
    out = tmp_path / "rows.jsonl"
    result = afdp("dataset", "export", "--repo", str(repo), "--trust", str(trust), "--out", str(out), "--service", "api")
    assert result.returncode == 0 and "wrote 20 row(s)" in result.stdout, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert_exact([json.loads(row) for row in out.read_text(encoding="utf-8").splitlines()])
    replayed = afdp("replay", "--repo", str(repo), "--trust", str(trust), "--service", "api", "--all", terminal=True)
    assert "\x1b[1A" not in replayed.stdout and "d-1" in replayed.stdout, replayed.stderr


def test_import_report_shows_a_history_files_text(tmp_path, cli, keys, tsa):
    """A GitHub deployment that never succeeded is skipped with its statuses named: they
    come from the file."""
    from test_history_import import WORKFLOW

    repo = tmp_path / "evidence"
    assert cli("init", str(repo)).code == 0
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(WORKFLOW)
    history = tmp_path / "deployments.json"
    history.write_text(json.dumps([{"id": 9, "created_at": "2026-01-01T00:00:00Z", "sha": "a" * 40,
                                    "statuses": [{"state": ATTACK, "created_at": "2026-01-01T00:01:00Z"}]}]))
    args = ("import", "--repo", str(repo), "--key", str(keys / "dev.key"), "--tsa", tsa.url, "--github-deployments",
            str(history), "--service", "api", "--workflow", str(workflow), "--prometheus", "http://127.0.0.1:1",
            "--set", "HOOK_PORT=9", "--dry-run")
    result = afdp(*args)
    assert result.returncode == 0 and "skipped" in result.stdout, result.stderr
    assert_shown_not_obeyed(result.stdout)
    assert_exact(json.loads(afdp(*args, "--json").stdout))


def test_validate_and_plan_quote_a_workflow_as_text(tmp_path):
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(f"name: w\nversion: '1'\n{json.dumps(ATTACK)}: 1\n", encoding="utf-8")
    result = afdp("validate", str(workflow))
    assert result.returncode == 1 and "invalid" in result.stdout, result.stderr
    assert_shown_not_obeyed(result.stdout)
    # the finding quotes the key as Python does (repr): --json carries the same message
    assert_exact(json.loads(afdp("validate", str(workflow), "--json").stdout), SHOWN)
    planned = afdp("plan", str(workflow))
    assert planned.returncode == 1 and "\x1b" not in planned.stderr and "\u202e" not in planned.stderr, planned.stderr
    assert SHOWN in planned.stderr


def test_log_on_a_terminal_shows_a_foreign_subject_as_text(repo, signer, tsa, trust_file):
    """``afdp log`` draws a rich table on a terminal: a foreign commit's subject is a cell."""
    from tamper import Entry, read_branch, write_branch
    from test_report import build_run_deployment

    build_run_deployment(repo, signer, tsa)
    write_branch(repo, [*read_branch(repo), Entry(ATTACK + "\n", None, {"notes.txt": b"x"})])
    result = afdp("log", "--repo", str(repo), "--service", "api", "--deployment", "d-42", terminal=True)
    assert "not an AFDP record" in result.stdout, result.stderr
    assert_shown_not_obeyed(result.stdout)


def test_log_show_source_shows_escapes_on_a_terminal_and_exact_bytes_elsewhere(monkeypatch, tmp_path):
    """``afdp log --show-source``: on a terminal (a real pseudo-terminal here) a stored
    file is text with its hidden characters as escapes; to a file, its exact bytes."""
    from afdp.cli import output

    data = "# owner: admin\u202e\nname: x\x1b[2K\n".encode()
    master, slave = os.openpty()
    with os.fdopen(slave, "w", encoding="utf-8", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stdout", terminal)
        output.write_source(data)
        terminal.flush()
        # a pseudo-terminal hands its output over a line at a time: read until it is quiet
        import select

        chunks = []
        while select.select([master], [], [], 1.0)[0]:
            chunks.append(os.read(master, 4096))
        shown = b"".join(chunks).decode()
    os.close(master)
    assert "\u202e" not in shown and "\x1b" not in shown
    assert "admin\\u202e" in shown and "x\\x1b[2K" in shown
    target = tmp_path / "out.bin"
    with open(target, "w", encoding="utf-8") as handle:
        monkeypatch.setattr(sys, "stdout", handle)
        output.write_source(data)
    assert target.read_bytes() == data


def test_github_action_error_data_is_one_workflow_command():
    """The Action's failure is a GitHub workflow command, ``::error title=AFDP::DATA``: a
    message of several lines printed raw would start a line of its own, which GitHub runs
    as a command when it begins with ``::``. The data is escaped as GitHub's toolkit does
    (``%``, CR, LF), and every other hidden character shown as an escape."""
    from afdp.audit.action import command_data

    assert command_data("50% done\r\n::add-mask::x" + ATTACK) == "50%25 done%0D%0A::add-mask::x" + SHOWN
    assert command_data("no such workflow file: w.yaml") == "no such workflow file: w.yaml"  # plain text unchanged


# --- pages: the compliance report, the insights page, the dashboard ---------------------------------

#: the same text in a page: HTML-escaped after the hidden characters became escapes
SHOWN_HTML = "\\x1b[1A\\x1b[2K[bold red]VERIFIED[/]\\u202e"


def assert_page_shows(page: str, shown: str) -> None:
    """HTML escaping alone would leave the ESC and the bidi override in the page (a
    browser, or the PDF made from it, reorders the text around U+202E)."""
    assert "\x1b" not in page and "\u202e" not in page, page[:2000]
    assert shown in page, page[:2000]


def test_report_html_shows_evidence_text_as_text(hostile_history, tmp_path):
    repo, trust = hostile_history
    out = tmp_path / "report.html"
    result = afdp("report", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--trust", str(trust),
                  "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_page_shows(out.read_text(encoding="utf-8"), "latency" + SHOWN_HTML)


def test_insights_page_shows_evidence_text_as_text(hostile_history, tmp_path):
    repo, trust = hostile_history
    page = tmp_path / "insights.html"
    result = afdp("insights", "--repo", str(repo), "--trust", str(trust), "--service", "api", "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert_page_shows(page.read_text(encoding="utf-8"), "impact.latency" + SHOWN_HTML)


def test_dashboard_templates_show_plain_strings_as_text_and_keep_their_own_markup():
    from markupsafe import Markup

    from afdp.service.ui import _ENV

    template = _ENV.from_string("<p>{{ reason }}</p>{{ plot }}<pre>{{ lines }}</pre>")
    page = template.render(reason="ok " + ATTACK, plot=Markup("<svg>\n<text>a</text>\n</svg>"), lines="one\ntwo")
    assert_page_shows(page, "ok " + SHOWN_HTML)
    assert "<svg>\n<text>a</text>\n</svg>" in page  # the page's own markup, untouched
    assert "<pre>one\ntwo</pre>" in page  # line breaks are kept in plain strings


def test_visible_html_escapes_markup_and_hidden_characters_and_keeps_lines():
    from afdp.errors import visible_html

    assert visible_html('<b a="1">x</b>\u202e\nnext') == "&lt;b a=&quot;1&quot;&gt;x&lt;/b&gt;\\u202e\nnext"
    assert visible_html("plain text") == "plain text"
