"""Text an attacker wrote never drives the auditor's terminal.

A Git tree entry name, a ref name or a package's signer name can hold ESC sequences
(cursor up, erase line) or bidi overrides. Printed as they are, they erase a FAILED
verdict, or the words "not independent", and print a VERIFIED line of the attacker's
choosing in their place (the exit code stays 1, but the auditor reads the screen).
Every line AFDP prints for a human shows such characters as escapes (``\\x1b``). Real
repositories, real packages, the real CLI in its own process; nothing is mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import build_deployment
from tamper import edit, with_file
from test_report import build_run_deployment

from afdp.errors import visible
from afdp.evidence.trust import write_trust_policy

#: cursor up, erase the line, column 1, a forged verdict, erase the rest; a bidi override
FORGED = "VERIFIED api/d-42: 8 record(s), sealed; signed by dev; head 0123456789ab"
ATTACK = "\x1b[1A\x1b[2K\x1b[G" + FORGED + "\x1b[K\u202e"
_CLI = "import sys; from afdp.cli import main; sys.exit(main())"


def afdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def assert_shown_not_obeyed(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text, text[:2000]
    assert "\\x1b[1A\\x1b[2K\\x1b[G" + FORGED in text  # shown, as escapes


def test_tree_entry_name_cannot_rewrite_a_failed_verdict(repo, signer, tsa, trust_file, cli, tmp_path):
    build_run_deployment(repo, signer, tsa)
    edit(repo, 3, lambda entry: with_file(entry, ATTACK, b"x"))  # a file named by the attacker
    out = tmp_path / "pkg"
    assert cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
               "--trust", str(trust_file), "--out", str(out)).code == 1
    for args in (("--bundle", str(out)), ("--repo", str(repo), "--service", "api", "--deployment", "d-42")):
        result = afdp("verify", *args, "--trust", str(trust_file))
        assert result.returncode == 1 and result.stdout.startswith("FAILED api/d-42: "), result.stderr
        assert_shown_not_obeyed(result.stdout)
    # --json keeps the exact characters (a JSON string escapes them itself)
    document = afdp("verify", "--bundle", str(out), "--trust", str(trust_file), "--json")
    failures = json.loads(document.stdout)["branches"][0]["failures"]
    assert any("\x1b[1A" in failure["where"] for failure in failures)


def test_package_signer_name_cannot_hide_not_independent(repo, attacker, other_tsa, keys, cli, tmp_path):
    """The package's own policy names its signer: the headline quotes it."""
    build_deployment(repo, attacker, other_tsa, steps=2)
    evil = tmp_path / "evil-trust.yaml"
    write_trust_policy(evil, keys=[keys / "attacker.key.pub"], tsa_roots=[other_tsa.directory / "root.pem"])
    out = tmp_path / "pkg-evil"
    assert cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
               "--trust", str(evil), "--out", str(out)).code == 0
    policy = out / "trust" / "trust-policy.yaml"
    escaped = ATTACK.replace("\x1b", "\\e").replace("\u202e", "\\u202e")
    policy.write_text(policy.read_text().replace("name: attacker", f'name: "{escaped}"', 1))
    result = afdp("verify", "--bundle", str(out))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("VERIFIED against the package's OWN trust policy — not independent: api/d-42")
    assert_shown_not_obeyed(result.stdout)


def test_error_lines_show_a_bundles_ref_names_as_escapes(tmp_path):
    """A bundle's header names its refs; the error naming them is one visible line."""
    from test_export_hardening import BRANCH, bundle_of, pack_of, tiny_history

    entries, head = tiny_history()
    path = tmp_path / "x.bundle"
    path.write_bytes(bundle_of([(head, BRANCH), (head, "refs/heads/\u202e" + "x")], pack_of(entries)))
    result = afdp("verify", "--bundle", str(path), "--trust", str(tmp_path / "unused.yaml"))
    assert result.returncode == 1 and "\u202e" not in result.stderr and "\\u202ex" in result.stderr, result.stderr


def test_visible_leaves_printable_text_alone_and_escapes_the_rest():
    assert visible("record 3 (decide): chain: prev cites 9f…, [x] é 中") == "record 3 (decide): chain: prev cites 9f…, [x] é 中"
    assert visible("a\x1b[2K\x07\u200b\u2028\udc9b") == "a\\x1b[2K\\x07\\u200b\\u2028\\udc9b"


def test_foreign_commit_subject_cannot_rewrite_afdp_log(repo, signer, tsa, trust_file):
    """``afdp log`` lists every commit, a foreign one by its subject: shown, not obeyed."""
    from tamper import Entry, read_branch, write_branch

    build_run_deployment(repo, signer, tsa)
    entries = read_branch(repo)
    write_branch(repo, [*entries, Entry(ATTACK + "\n", None, {"notes.txt": b"x"})])
    result = afdp("log", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert "VERIFICATION FAILED" in result.stdout, (result.stdout, result.stderr)
    assert_shown_not_obeyed(result.stdout)
