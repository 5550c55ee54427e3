"""Evidence packages: afdp export, then afdp verify --bundle, and the README's own checks.

Real parts: pygit2 repositories, the embedded TSA over loopback HTTP, and for the
independent checks Debian's git, openssl and ssh-keygen (skipped only if missing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment
from tamper import edit, with_file
from test_report import build_run_deployment

from afdp.audit.export import BundleError, open_package, read_bundle, read_pack, write_bundle
from afdp.evidence.trust import write_trust_policy

TOOLS = all(shutil.which(t) for t in ("git", "openssl", "ssh-keygen"))


@pytest.fixture()
def package(repo, signer, tsa, trust_file, cli, tmp_path) -> Path:
    build_run_deployment(repo, signer, tsa)
    out = tmp_path / "pkg"
    result = cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "VERIFIED: api/d-42: 8 record(s), sealed, every check passed"
    return out


def test_export_then_verify_bundle(package, cli):
    names = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert names == [
        "README.md",
        "api-d-42.bundle",
        "report.html",
        "trust/allowed_signers",
        "trust/keys/dev.pem",
        "trust/trust-policy.yaml",
        "trust/tsa-roots.pem",
    ]
    assert (package / "README.md").read_text().splitlines()[2] == "**VERIFIED: api/d-42: 8 record(s), sealed, every check passed**"
    assert "<title>VERIFIED" in (package / "report.html").read_text()
    policy = package / "trust" / "trust-policy.yaml"
    for target in (package, package / "api-d-42.bundle"):
        result = cli("verify", "--bundle", str(target), "--trust", str(policy))
        assert result.code == 0, result.err
        assert result.out.startswith("VERIFIED api/d-42: 8 record(s), sealed")
    document = cli("verify", "--bundle", str(package), "--trust", str(policy), "--json").json()
    assert document["ok"] is True and document["branches"][0]["record_count"] == 8
    assert document["trust_source"] == "auditor" and document["independent"] is True


def test_package_own_trust_is_never_a_pass(package, cli, keys, tsa):
    """Finding 4: without --trust every check runs, but the verdict says whose trust it was."""
    result = cli("verify", "--bundle", str(package))
    assert result.code == 1, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(
        "VERIFIED against the package's OWN trust policy — not independent: api/d-42: 8 record(s), sealed; signed by dev"
    )
    key = _spki_sha256(keys / "dev.key.pub")
    assert any(line.strip().startswith("signer dev: keyid ") and key in line for line in lines)
    root = _openssl_fingerprint(tsa.directory / "root.pem")
    assert any(line.strip().startswith("TSA root ") and root in line for line in lines)
    assert f"--trust {package / 'trust' / 'trust-policy.yaml'}" in result.out
    document = cli("verify", "--bundle", str(package), "--json").json()
    # "verdict" is never VERIFIED for a package that vouches for itself; "checks" says
    # what its own policy gave
    assert document["ok"] is False and document["verdict"] == "NOT INDEPENDENT" and document["checks"] == "VERIFIED"
    assert document["trust_source"] == "package" and document["independent"] is False
    assert document["headline"] == lines[0]
    assert document["branches"][0]["ok"] is True  # the checks themselves passed
    (signer,) = document["fingerprints"]["signers"]
    assert signer["name"] == "dev" and signer["public_key_sha256"] == key
    assert [r["sha256"] for r in document["fingerprints"]["tsa_roots"]] == [root]
    # the README lists the same fingerprints, and how to accept them
    readme = (package / "README.md").read_text()
    assert key in readme and root in readme
    assert "afdp verify --bundle pkg/ --trust pkg/trust/trust-policy.yaml" in readme


def test_forged_package_says_whose_trust_and_fails(repo, attacker, other_tsa, keys, trust_file, cli, tmp_path):
    """/tmp/qa2/pkg-evil: attacker key + attacker TSA + the attacker's own trust policy."""
    build_deployment(repo, attacker, other_tsa, steps=2)
    evil = tmp_path / "evil-trust.yaml"
    write_trust_policy(evil, keys=[keys / "attacker.key.pub"], tsa_roots=[other_tsa.directory / "root.pem"])
    out = tmp_path / "pkg-evil"
    assert cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(evil), "--out", str(out)).code == 0
    result = cli("verify", "--bundle", str(out))
    assert result.code == 1
    first = result.out.splitlines()[0]
    assert first.startswith("VERIFIED against the package's OWN trust policy — not independent: api/d-42")
    assert "signed by attacker" in first
    assert _spki_sha256(keys / "attacker.key.pub") in result.out
    assert _openssl_fingerprint(other_tsa.directory / "root.pem") in result.out
    # the auditor's own policy: the forgery fails, and the package's policy is not consulted
    result = cli("verify", "--bundle", str(out), "--trust", str(trust_file))
    assert result.code == 1 and result.out.startswith("FAILED api/d-42")
    assert "against the package's OWN" not in result.out


def test_auditors_trust_ignores_the_package_policy_entirely(package, cli, trust_file):
    (package / "trust" / "trust-policy.yaml").write_text("{not: [valid yaml")
    result = cli("verify", "--bundle", str(package), "--trust", str(trust_file), "--json")
    assert result.code == 0, result.err
    assert result.json()["trust_source"] == "auditor"
    result = cli("verify", "--bundle", str(package))  # and without --trust it is what is read
    assert result.code == 2 and "not valid YAML" in result.err


@pytest.mark.skipif(not TOOLS, reason="openssl and ssh-keygen compute the fingerprints independently")
def test_fingerprints_match_the_standard_tools(package, cli, keys, tmp_path):
    document = cli("verify", "--bundle", str(package), "--json").json()
    (signer,) = document["fingerprints"]["signers"]
    converted = subprocess.run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", str(keys / "dev.key.pub")], capture_output=True, text=True, check=True).stdout
    (tmp_path / "dev.ssh.pub").write_text(converted)
    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "dev.ssh.pub")], capture_output=True, text=True, check=True).stdout
    assert signer["ssh_fingerprint"] == listed.split()[1]
    subject = subprocess.run(["openssl", "x509", "-in", str(package / "trust" / "tsa-roots.pem"), "-noout", "-subject", "-nameopt", "RFC2253"], capture_output=True, text=True, check=True).stdout
    assert document["fingerprints"]["tsa_roots"][0]["subject"] == subject.strip().removeprefix("subject=")


def _spki_sha256(public_pem: Path) -> str:
    if shutil.which("openssl") is None:
        from cryptography.hazmat.primitives import serialization

        der = serialization.load_pem_public_key(public_pem.read_bytes()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(public_pem), "-outform", "DER"], capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def _openssl_fingerprint(certificate: Path) -> str:
    if shutil.which("openssl") is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        digest = x509.load_pem_x509_certificate(certificate.read_bytes()).fingerprint(hashes.SHA256()).hex().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    out = subprocess.run(["openssl", "x509", "-in", str(certificate), "-noout", "-fingerprint", "-sha256"], capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


@pytest.mark.skipif(not TOOLS, reason="git, openssl and ssh-keygen are needed for the independent checks")
def test_readme_independent_checks_run_as_written(package):
    readme = (package / "README.md").read_text()
    section = readme.split("## Independent checks", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=package, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "is okay" in output and "The bundle records a complete history." in output
    assert output.count("Verification: OK") == 8
    assert output.count('Good "git" signature') == 8
    assert "FAILED" not in output and "Bad signature" not in output


def test_package_without_trust_material(package, cli, trust_file):
    shutil.rmtree(package / "trust")
    result = cli("verify", "--bundle", str(package))
    assert result.code == 2
    assert result.err.strip() == (
        f"afdp: error: evidence package {package} has no trust material "
        "(trust/trust-policy.yaml); pass --trust with the auditor's trust policy"
    )
    assert cli("verify", "--bundle", str(package), "--trust", str(trust_file)).code == 0


def test_auditors_trust_takes_precedence(package, cli, keys, tsa, tmp_path):
    other = tmp_path / "auditor-only-trusts-attacker.yaml"
    write_trust_policy(other, keys=[keys / "attacker.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    result = cli("verify", "--bundle", str(package), "--trust", str(other))
    assert result.code == 1
    assert "signer" in result.out and "FAILED api/d-42" in result.out


def test_tampered_bundle_bytes_fail(package, cli):
    bundle = package / "api-d-42.bundle"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    result = cli("verify", "--bundle", str(package))
    assert result.code == 1
    assert "pack checksum does not match: the bundle was altered or truncated" in result.err
    bundle.write_bytes(bytes(data[: len(data) // 3]))
    assert cli("verify", "--bundle", str(package)).code == 1


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to re-bundle like an attacker")
def test_rewritten_and_rebundled_branch_fails(package, cli, tmp_path):
    """An attacker rewrites a record in the bundle and re-bundles it with plain git."""
    opened = open_package(package)
    work = tmp_path / "attacker.git"
    shutil.copytree(opened.repository, work)
    edit(work, 3, lambda e: with_file(e, "result.json", b'{"git_commit": "innocent"}'))
    bundle = package / "api-d-42.bundle"
    bundle.unlink()
    subprocess.run(["git", "-C", str(work), "bundle", "create", str(bundle), "afdp/api/d-42"], check=True, capture_output=True)
    result = cli("verify", "--bundle", str(package), "--trust", str(package / "trust" / "trust-policy.yaml"))
    assert result.code == 1
    assert "FAILED api/d-42" in result.out
    assert "record 3 (capture_deployment_metadata)" in result.out


def test_incomplete_or_foreign_bundles_are_refused(package, tmp_path):
    refs, pack = read_bundle((package / "api-d-42.bundle").read_bytes())
    (head,) = refs.values()
    shallow = tmp_path / "shallow.bundle"
    shallow.write_bytes(b"# v2 git bundle\n-" + head.encode() + b"\n" + head.encode() + b" refs/heads/afdp/api/d-42\n\n" + pack)
    with pytest.raises(BundleError, match="prerequisite commits"):
        open_package(shallow, trust=package / "trust" / "trust-policy.yaml")
    foreign = tmp_path / "foreign.bundle"
    foreign.write_bytes(b"# v2 git bundle\n" + head.encode() + b" refs/heads/main\n\n" + pack)
    with pytest.raises(BundleError, match="holds no AFDP evidence branch"):
        open_package(foreign, trust=package / "trust" / "trust-policy.yaml")
    with pytest.raises(BundleError, match="not a git bundle"):
        read_bundle(b"PK\x03\x04 a zip file")


def test_git_made_deltified_bundle_reads_like_git(tmp_path):
    """Packs from git itself use OFS/REF deltas; every object comes back byte for byte."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    source = tmp_path / "src"
    git = pygit2.init_repository(str(source))
    sig = pygit2.Signature("t", "t@example.invalid")
    parents: list = []
    text = "\n".join(f"line {i} of a file that changes a little each commit" for i in range(400))
    for n in range(6):
        text += f"\nchange {n}"
        blob = git.create_blob(text.encode())
        builder = git.TreeBuilder()
        builder.insert("file.txt", blob, pygit2.enums.FileMode.BLOB)
        commit = git.create_commit("refs/heads/main", sig, sig, f"c{n}", builder.write(), parents)
        parents = [commit]
    bundle = tmp_path / "git.bundle"
    subprocess.run(["git", "-C", str(source), "bundle", "create", str(bundle), "main"], check=True, capture_output=True)
    refs, pack = read_bundle(bundle.read_bytes())
    assert refs == {"refs/heads/main": str(parents[0])}
    objects = read_pack(pack)
    assert len(objects) == 18
    assert _delta_count(pack) > 0  # git deltified the blobs, so the delta code ran
    for kind, content in objects:
        oid = pygit2.hash(content) if kind == "blob" else None
        if oid is not None:
            assert git.get(oid).data == content
    # and our own bundles are read by git
    ours = tmp_path / "ours.bundle"
    write_bundle(source, "refs/heads/main", ours)
    check = tmp_path / "check"
    pygit2.init_repository(str(check))
    done = subprocess.run(["git", "-C", str(check), "bundle", "verify", str(ours)], capture_output=True, text=True)
    assert done.returncode == 0 and "complete history" in done.stdout + done.stderr


def _delta_count(pack: bytes) -> int:
    from afdp.audit import export

    body, pos, deltas = pack[:-20], 12, 0
    for _ in range(int.from_bytes(pack[8:12], "big")):
        kind, size, pos = export._varint_size(body, pos)
        if kind == 6:
            while body[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == 7:
            pos += 20
        deltas += kind in (6, 7)
        _, pos = export._inflate(body, pos, size)
    return deltas


def test_export_bad_input_writes_nothing(repo, signer, tsa, trust_file, cli, tmp_path):
    build_deployment(repo, signer, tsa, steps=2)
    out = tmp_path / "pkg"
    result = cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-404", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 2 and "no evidence branch refs/heads/afdp/api/d-404" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auditor", "evidence"]
    out.mkdir()
    (out / "something").write_text("x")
    result = cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out))
    assert result.code == 2 and "not an empty folder" in result.err
    assert cli("verify", "--bundle", str(tmp_path / "nothing-here")).code == 2
    result = cli("verify", "--bundle", str(out), "--repo", str(repo))
    assert result.code == 2 and "--bundle replaces --repo" in result.err


def test_export_of_failing_branch_says_failed(repo, signer, tsa, trust_file, cli, tmp_path):
    build_deployment(repo, signer, tsa, steps=2)
    edit(repo, 1, lambda e: with_file(e, "timestamp-0.tsr", b"junk"))
    out = tmp_path / "pkg"
    result = cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(trust_file), "--out", str(out), "--json")
    assert result.code == 1
    assert result.json()["verdict"] == "FAILED"
    assert (out / "README.md").read_text().splitlines()[2].startswith("**FAILED: the evidence for api/d-42 did not verify")
    assert cli("verify", "--bundle", str(out)).code == 1
    assert json.loads(cli("verify", "--bundle", str(out), "--json").out)["ok"] is False
    result = cli("verify", "--bundle", str(out), "--trust", str(trust_file))
    assert result.code == 1 and result.out.startswith("FAILED api/d-42")
    result = cli("verify", "--bundle", str(out))
    assert result.out.startswith("FAILED against the package's OWN trust policy — not independent: api/d-42")


def test_pinned_sigstore_trusted_root_travels_with_the_package(repo, signer, tsa, keys, cli, tmp_path):
    import sigstore
    import yaml

    from afdp.evidence.trust import write_trust_policy

    build_deployment(repo, signer, tsa, steps=1)
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shipped = next(Path(sigstore.__file__).parent.glob("_store/*/trusted_root.json"))
    pinned = auditor / "pinned-root.json"
    shutil.copy(shipped, pinned)
    policy = auditor / "trust.yaml"
    write_trust_policy(policy, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"], sigstore_trusted_root=pinned)
    out = tmp_path / "pkg"
    assert cli("export", "--repo", str(repo), "--service", "api", "--deployment", "d-42", "--trust", str(policy), "--out", str(out)).code == 0
    packaged = yaml.safe_load((out / "trust" / "trust-policy.yaml").read_text())
    assert packaged["sigstore"]["trusted_root"] == "sigstore-trusted-root.json"
    assert (out / "trust" / "sigstore-trusted-root.json").read_bytes() == shipped.read_bytes()
    pinned.unlink()  # the package must not depend on the exporter's files
    moved = tmp_path / "elsewhere" / "pkg"
    shutil.move(str(out), moved)
    result = cli("verify", "--bundle", str(moved), "--trust", str(moved / "trust" / "trust-policy.yaml"))
    assert result.code == 0, result.err + result.out
    result = cli("verify", "--bundle", str(moved))
    assert result.code == 1 and "not independent" in result.out.splitlines()[0]
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert f"Sigstore trusted root: pinned file SHA-256 {digest}" in result.out


def test_verify_bundle_names_what_it_did_not_check(package, cli, trust_file):
    """A package's README and report.html are the exporter's words: an attacker who writes
    the package can make them say VERIFIED over a bundle that fails. The verdict covers
    the bundle only, and says which files beside it it did not read."""
    (package / "report.html").write_text("<title>VERIFIED</title>every check passed")
    (package / "notes.txt").write_text("all good")
    result = cli("verify", "--bundle", str(package), "--trust", str(trust_file))
    assert result.code == 0, result.err
    last = result.out.splitlines()[-1]
    assert last.startswith("  Not checked: README.md, notes.txt, report.html, trust/: the exporter's own words, not evidence")
    document = cli("verify", "--bundle", str(package), "--trust", str(trust_file), "--json").json()
    assert document["not_checked"] == ["README.md", "notes.txt", "report.html", "trust/"]
    # the package's policy, named by the auditor: trust/ was read
    policy = package / "trust" / "trust-policy.yaml"
    document = cli("verify", "--bundle", str(package), "--trust", str(policy), "--json").json()
    assert document["not_checked"] == ["README.md", "notes.txt", "report.html"]
    # the .bundle file alone: the README and report an export writes beside it
    document = cli("verify", "--bundle", str(package / "api-d-42.bundle"), "--trust", str(trust_file), "--json").json()
    assert document["not_checked"] == ["README.md", "report.html"]
    # the package's own trust: the same line among the verdict's
    result = cli("verify", "--bundle", str(package))
    assert result.code == 1
    assert any(line.startswith("  Not checked: README.md, notes.txt, report.html: ") for line in result.out.splitlines())


def test_the_report_of_what_verified_is_written_from_the_bundle(package, cli, trust_file, tmp_path):
    """docs/audit.md: `git clone --bare` the bundle, then `afdp report` on it."""
    import subprocess

    clone = tmp_path / "evidence.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(package / "api-d-42.bundle"), str(clone)], check=True)
    out = tmp_path / "report.html"
    result = cli("report", "--repo", str(clone), "--service", "api", "--deployment", "d-42",
                 "--trust", str(trust_file), "--out", str(out))
    assert result.code == 0, result.err
    assert "<title>VERIFIED" in out.read_text()
