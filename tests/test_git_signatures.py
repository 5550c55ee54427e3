"""Git-native commit signatures (afdp/evidence/sshsig.py): plain git checks them, afdp verify too.

Real git (``git log --show-signature`` with ``gpg.format=ssh``, which runs OpenSSH's
``ssh-keygen -Y verify``) checks every evidence commit; negative tests strip or replace
the signature of a commit and expect check ``commit-signature`` to fail for that record.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest
from conftest import build_deployment
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.signer import CryptoSigner, SSlibKey

from afdp.errors import ConfigurationError
from afdp.evidence.names import branch_ref
from afdp.evidence.sshsig import (
    CommitSignatureError,
    allowed_signers_line,
    sign_git_commit,
    ssh_capable,
    verify_git_commit,
)
from afdp.evidence.trust import load_trust_policy, write_trust_policy
from afdp.verify.verifier import check_branch

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen (openssh-client)")


def git_show_signature(repo: Path, allowed: Path, ref: str = "afdp/api/d-42") -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "log", "--show-signature", ref],
        capture_output=True, text=True, check=True,
    )
    return out.stdout + out.stderr


def commit_count(shown: str) -> int:
    return sum(1 for line in shown.splitlines() if line.startswith("commit "))


def report_of(repo: Path, trust: Path):
    return check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust))


def rewrite_head(repo: Path, signature: str | None) -> None:
    """Replace the branch head by the same commit with ``signature`` (None: unsigned)."""
    git = pygit2.Repository(str(repo))
    ref = git.references[branch_ref("api", "d-42")]
    head = git.get(ref.target)
    content = git.create_commit_string(head.author, head.committer, head.message, head.tree_id, head.parent_ids)
    if signature is None:
        new = git.create_commit(None, head.author, head.committer, head.message, head.tree_id, head.parent_ids)
    else:
        new = git.create_commit_with_signature(content, signature)
    ref.set_target(new)


def head_content(repo: Path) -> bytes:
    git = pygit2.Repository(str(repo))
    head = git.get(git.references[branch_ref("api", "d-42")].target)
    return head.gpg_signature[1]


@pytest.fixture()
def sealed(repo, signer, tsa):
    build_deployment(repo, signer, tsa, steps=3)  # records 0..3 + seal 4
    return repo


def test_plain_git_says_good_signature_for_every_commit(sealed, keys, cli, tmp_path):
    allowed = tmp_path / "allowed_signers"
    helper = cli("keys", "allowed-signers", str(keys / "dev.key.pub"))
    assert helper.code == 0, helper.err
    allowed.write_text(helper.out)
    assert helper.out.startswith('afdp@evidence.invalid namespaces="git" ecdsa-sha2-nistp256 ')
    shown = git_show_signature(sealed, allowed)
    commits = commit_count(shown)
    assert commits == 5
    assert shown.count('Good "git" signature for afdp@evidence.invalid with ECDSA key') == commits, shown
    # the same branch against another key's allowed-signers file is not good
    other = tmp_path / "other_signers"
    other.write_text(allowed_signers_line((keys / "attacker.key.pub").read_bytes()) + "\n")
    untrusted = git_show_signature(sealed, other)
    assert 'Good "git" signature for' not in untrusted and "No principal matched" in untrusted


def test_verify_passes_with_commit_signatures(sealed, trust_file):
    report = report_of(sealed, trust_file)
    assert report.state == "verified", report.failures


def test_stripped_commit_signature_fails(sealed, trust_file):
    rewrite_head(sealed, None)
    report = report_of(sealed, trust_file)
    assert {(f.sequence, f.check) for f in report.failures} == {(4, "commit-signature")}
    assert "not signed" in report.failures[0].reason


def test_commit_resigned_by_another_key_fails(sealed, trust_file, attacker):
    rewrite_head(sealed, sign_git_commit(attacker, head_content(sealed)))
    report = report_of(sealed, trust_file)
    assert {(f.sequence, f.check) for f in report.failures} == {(4, "commit-signature")}
    assert "another key" in report.failures[0].reason


def test_commit_signature_of_another_commit_fails(sealed, trust_file):
    git = pygit2.Repository(str(sealed))
    parent = git.get(git.references[branch_ref("api", "d-42")].target).parents[0]
    rewrite_head(sealed, parent.gpg_signature[0].decode())  # genuine, but over another commit
    report = report_of(sealed, trust_file)
    assert {(f.sequence, f.check) for f in report.failures} == {(4, "commit-signature")}
    assert "does not verify over this commit" in report.failures[0].reason


def test_garbage_commit_signature_fails(sealed, trust_file):
    rewrite_head(sealed, "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----")
    report = report_of(sealed, trust_file)
    assert {(f.sequence, f.check) for f in report.failures} == {(4, "commit-signature")}
    assert "does not parse" in report.failures[0].reason


def test_wrong_namespace_is_refused(signer):
    import afdp.evidence.sshsig as sshsig

    content = b"tree 0000\n\nmessage\n"
    original = sshsig.NAMESPACE
    try:
        sshsig.NAMESPACE = "file"  # a signature made for ssh-keygen -Y sign -n file
        foreign = sign_git_commit(signer, content)
    finally:
        sshsig.NAMESPACE = original
    assert foreign is not None
    with pytest.raises(CommitSignatureError, match="namespace"):
        verify_git_commit(foreign.encode(), content, signer.public_key)
    good = sign_git_commit(signer, content)
    assert good is not None
    verify_git_commit(good.encode(), content, signer.public_key)
    with pytest.raises(CommitSignatureError, match="does not verify"):
        verify_git_commit(good.encode(), content + b"x", signer.public_key)


def _key_files(tmp_path: Path, private_key, name: str) -> tuple[Path, Path]:
    private = tmp_path / f"{name}.key"
    private.write_bytes(private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = tmp_path / f"{name}.key.pub"
    public.write_bytes(private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_ed25519_keys_sign_commits_too(repo, tsa, tmp_path):
    from afdp.evidence.signing import load_signer

    private, public = _key_files(tmp_path, ed25519.Ed25519PrivateKey.generate(), "ed")
    build_deployment(repo, load_signer(str(private)), tsa, steps=1)
    allowed = tmp_path / "allowed"
    allowed.write_text(allowed_signers_line(public.read_bytes()) + "\n")
    shown = git_show_signature(repo, allowed)
    assert shown.count('Good "git" signature') == commit_count(shown) == 3
    trust = tmp_path / "trust.yaml"
    write_trust_policy(trust, keys=[public], tsa_roots=[tsa.directory / "root.pem"])
    assert report_of(repo, trust).state == "verified"


def test_scheme_without_ssh_form_skips_the_commit_signature(repo, tsa, tmp_path):
    # RSA-PSS (securesystemslib's RSA default) has no SSH signature form: the commit stays
    # unsigned, the DSSE signature is the evidence, and verification accepts that...
    from afdp.evidence.signing import load_signer

    private, public = _key_files(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa")
    pss = load_signer(str(private))
    assert pss.public_key.scheme == "rsassa-pss-sha256" and not ssh_capable(pss.public_key)
    build_deployment(repo, pss, tsa, steps=1)
    git = pygit2.Repository(str(repo))
    head = git.get(git.references[branch_ref("api", "d-42")].target)
    assert head.gpg_signature == (None, None)
    trust = tmp_path / "trust.yaml"
    write_trust_policy(trust, keys=[public], tsa_roots=[tsa.directory / "root.pem"])
    assert report_of(repo, trust).state == "verified"
    # ... but a signature that appears on such a commit cannot be checked: fail closed.
    rsa_key = serialization.load_pem_private_key(private.read_bytes(), None)
    rsa_pkcs1 = CryptoSigner(rsa_key, SSlibKey.from_crypto(rsa_key.public_key(), scheme="rsa-pkcs1v15-sha256"))
    rewrite_head(repo, sign_git_commit(rsa_pkcs1, head.gpg_signature[1] or b"x"))
    report = report_of(repo, trust)
    assert {f.check for f in report.failures} == {"commit-signature"}
    assert "cannot make SSH signatures" in report.failures[0].reason


def test_allowed_signers_bad_input(cli, tmp_path):
    from afdp.evidence.signing import generate_key

    generate_key(tmp_path / "k.key")
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    result = cli("keys", "allowed-signers", str(bad))
    assert result.code == 2 and "does not parse" in result.err
    assert cli("keys", "allowed-signers", str(tmp_path / "missing.pub")).code == 2
    with pytest.raises(ConfigurationError, match="principal"):
        allowed_signers_line((tmp_path / "k.key.pub").read_bytes(), principal="two words")


@pytest.mark.parametrize(
    ("make_key", "scheme"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), None),
        (lambda: ec.generate_private_key(ec.SECP384R1()), None),
        (ed25519.Ed25519PrivateKey.generate, None),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-pkcs1v15-sha512"),
    ],
    ids=["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-pkcs1v15-sha512"],
)
def test_openssh_accepts_the_signature_of_every_ssh_capable_scheme(tmp_path, make_key, scheme):
    key = make_key()
    public = SSlibKey.from_crypto(key.public_key(), scheme=scheme) if scheme else None
    signer = CryptoSigner(key, public)
    content = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nmessage\n"
    armored = sign_git_commit(signer, content)
    assert armored is not None
    (tmp_path / "sig").write_text(armored + "\n")
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "allowed").write_text(allowed_signers_line(pem) + "\n")
    checked = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "afdp@evidence.invalid", "-n", "git", "-s", str(tmp_path / "sig")],
        input=content, capture_output=True,
    )
    assert checked.returncode == 0 and b'Good "git" signature' in checked.stdout, checked.stderr
    verify_git_commit(armored.encode(), content, signer.public_key)
    refused = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "afdp@evidence.invalid", "-n", "git", "-s", str(tmp_path / "sig")],
        input=content + b"x", capture_output=True,
    )
    assert refused.returncode != 0
