"""A crafted Git tree nested far deeper than AFDP's three levels, in a repository and in a
package: a named commit failure, never a RecursionError ("internal error", exit 3).

Built with pygit2's TreeBuilder (libgit2 writes such trees without complaint; git reads
them); the real CLI runs in its own process; nothing is mocked.
"""

from __future__ import annotations

import subprocess
import sys

import pygit2
from test_report import build_run_deployment

_CLI = "import sys; from afdp.cli import main; sys.exit(main())"


def afdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=300, check=False)


def test_a_tree_nested_20000_levels_is_a_commit_failure(repo, signer, tsa, trust_file, tmp_path):
    build_run_deployment(repo, signer, tsa)
    git = pygit2.Repository(str(repo))
    ref = git.references["refs/heads/afdp/api/d-42"]
    head = git.get(ref.target)
    builder = git.TreeBuilder()
    builder.insert("f", git.create_blob(b"x"), pygit2.enums.FileMode.BLOB)
    tree = builder.write()
    for _ in range(20_000):
        builder = git.TreeBuilder()
        builder.insert("a", tree, pygit2.enums.FileMode.TREE)
        tree = builder.write()
    root = git.TreeBuilder(head.tree)
    root.insert("records", git.get(head.tree["records"].id).id, pygit2.enums.FileMode.TREE)
    root.insert("deep", tree, pygit2.enums.FileMode.TREE)
    sig = pygit2.Signature("AFDP", "afdp@evidence.invalid", 1_700_000_000, 0)
    ref.set_target(git.create_commit(None, sig, sig, "deep\n", root.write(), [head.id]))

    result = afdp("verify", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file))
    assert result.returncode == 1 and result.stdout.startswith("FAILED api/d-42: "), result.stderr
    assert "nests directories deeper than 16 levels (AFDP writes 3); not read" in result.stdout
    out = tmp_path / "pkg"
    exported = afdp("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42",
                    "--trust", str(trust_file), "--out", str(out))  # fmt: skip
    assert exported.returncode == 1 and exported.stdout.startswith("FAILED"), exported.stderr
    result = afdp("verify", "--bundle", str(out), "--trust", str(trust_file))
    assert result.returncode == 1 and "nests directories deeper than" in result.stdout, result.stderr


def test_afdp_log_reads_a_record_nested_past_the_recursion_limit(repo, signer, tsa, trust_file):
    """``afdp log`` shows unverified records: an envelope (or its payload) nested 100,000
    levels deep was 'internal error: RecursionError' (exit 3); it is now a commit that is
    not an AFDP record, and with --trust the story says the branch failed (exit 1)."""
    import base64
    import json

    from tamper import edit, with_file

    build_run_deployment(repo, signer, tsa)
    deep = b"[" * 100_000 + b"]" * 100_000
    wrapped = json.dumps({"payload": base64.b64encode(deep).decode(), "payloadType": "application/vnd.in-toto+json",
                          "signatures": [{"keyid": "x", "sig": "AA=="}]}).encode()  # fmt: skip
    edit(repo, 3, lambda entry: with_file(entry, "envelope.json", deep))
    edit(repo, 4, lambda entry: with_file(entry, "envelope.json", wrapped))
    where = ("--repo", str(repo), "--service", "api", "--deployment", "d-42")
    plain = afdp("log", *where)
    assert plain.returncode == 0 and "not an AFDP record" in plain.stdout, plain.stderr
    assert json.loads(afdp("log", *where, "--json").stdout)["records"]
    checked = afdp("log", *where, "--trust", str(trust_file))
    assert checked.returncode == 1 and "VERIFICATION FAILED" in checked.stdout, checked.stderr
