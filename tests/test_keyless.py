"""Keyless (Sigstore) records: offline verification of REAL bundles, and the record path.

Verification is tested on the real bundles in ../shared/assets/sigstore/ (copied from
sigstore-python's test assets; see that folder's README) through AFDP's own function,
:func:`afdp.evidence.keyless.verify_keyless_bundle`, offline, against the trusted roots shipped
inside the pinned ``sigstore`` package or a pinned trusted-root file.

Signing needs Fulcio, Rekor and an OIDC token, none of which can exist offline. Only
there a test double is used: ``RecordingKeylessSigner`` subclasses the real
:class:`~afdp.evidence.keyless.KeylessSigner` and replaces just its network call
(``_sigstore_bundle``) by a bundle built from the real staging bundle with the record's
own envelope signed by a local key. Such a bundle is well-formed but is not a real
Sigstore signature, so verification must (and does) reject it: that is what these
record-level tests check, together with the files, trailers and time-stamps written.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
import yaml
from conftest import build_deployment
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tamper import read_branch, with_file, write_branch

from afdp.errors import SigningError, UsageError
from afdp.evidence import records as rec
from afdp.evidence.keyless import (
    GITHUB_ISSUER,
    KEYLESS_KEYID,
    KeylessIdentity,
    KeylessSigner,
    KeylessVerificationError,
    SigstoreRoot,
    verify_keyless_bundle,
)
from afdp.evidence.names import branch_ref
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

ASSETS = Path(os.environ.get("AFDP_SHARED_ASSETS", "/work/shared/assets")) / "sigstore"
DSSE_BUNDLE = ASSETS / "dsse-statement.txt.sigstore.json"
MESSAGE_BUNDLE = ASSETS / "github-release.whl.sigstore.json"
BEACON = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
STAGING = SigstoreRoot("staging")

pytestmark = pytest.mark.skipif(not DSSE_BUNDLE.exists(), reason=f"real Sigstore bundles not found in {ASSETS}")


def trusted(identity: str = BEACON, issuer: str = GITHUB_ISSUER) -> list[KeylessIdentity]:
    return [KeylessIdentity("ci", identity, issuer)]


def expect(check: str, bundle: bytes, identities, root: SigstoreRoot, match: str) -> None:
    with pytest.raises(KeylessVerificationError, match=match) as caught:
        verify_keyless_bundle(bundle, identities=identities, root=root)
    assert caught.value.check == check
    assert caught.value.exit_code == 1


def shipped_trusted_root(instance: str) -> Path:
    import sigstore

    host = "tuf-repo-cdn.sigstage.dev" if instance == "staging" else "tuf-repo-cdn.sigstore.dev"
    return Path(sigstore.__file__).parent / "_store" / f"https%3A%2F%2F{host}" / "trusted_root.json"


# -- the real bundles, through AFDP's keyless verification ---------------------------------
def test_real_dsse_bundle_verifies_offline():
    verified = verify_keyless_bundle(DSSE_BUNDLE.read_bytes(), identities=trusted(), root=STAGING)
    assert (verified.name, verified.identity, verified.issuer) == ("ci", BEACON, GITHUB_ISSUER)
    assert verified.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(verified.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["name"] == "a.txt"


def test_wrong_identity():
    expect("keyless.identity", DSSE_BUNDLE.read_bytes(), trusted(identity=BEACON.replace("main", "evil")), STAGING, "is not trusted")


def test_wrong_issuer():
    expect("keyless.identity", DSSE_BUNDLE.read_bytes(), trusted(issuer="https://accounts.google.com"), STAGING, "issuer .* is not the trusted issuer")


def test_no_trusted_identity_at_all():
    expect("keyless.identity", DSSE_BUNDLE.read_bytes(), [], STAGING, "names no keyless identity")


def _altered(change) -> bytes:
    document = json.loads(DSSE_BUNDLE.read_bytes())
    change(document["dsseEnvelope"])
    return json.dumps(document).encode()


def test_altered_payload():
    def change(envelope):
        payload = base64.b64decode(envelope["payload"]).replace(b'"a.txt"', b'"b.txt"')
        envelope["payload"] = base64.b64encode(payload).decode()

    expect("keyless.signature", _altered(change), trusted(), STAGING, "invalid signature")


def test_altered_signature():
    def change(envelope):
        sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        sig[-1] ^= 1
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()

    expect("keyless.signature", _altered(change), trusted(), STAGING, "does not verify")


def test_wrong_trusted_root_instance():
    # a staging bundle against the production root shipped with sigstore
    expect("keyless.signature", DSSE_BUNDLE.read_bytes(), trusted(), SigstoreRoot("production"), "does not verify")


def test_pinned_trusted_root_file():
    pinned = SigstoreRoot("production", shipped_trusted_root("staging").read_text())
    assert verify_keyless_bundle(DSSE_BUNDLE.read_bytes(), identities=trusted(), root=pinned).identity == BEACON
    wrong = SigstoreRoot("staging", shipped_trusted_root("production").read_text())
    expect("keyless.signature", DSSE_BUNDLE.read_bytes(), trusted(), wrong, "does not verify")


def test_not_a_dsse_bundle():
    # a real production bundle, but a message signature (no DSSE envelope): not a record
    expect("keyless.bundle", MESSAGE_BUNDLE.read_bytes(), trusted(), SigstoreRoot("production"), "not a Sigstore DSSE bundle")
    expect("keyless.bundle", b"{not json", trusted(), STAGING, "not a Sigstore DSSE bundle")


def test_broken_certificate_is_a_bundle_failure():
    document = json.loads(DSSE_BUNDLE.read_bytes())
    document["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(b"not a certificate").decode()
    expect("keyless.bundle", json.dumps(document).encode(), trusted(), STAGING, "not a valid Sigstore bundle")


# -- trust policy -------------------------------------------------------------------------
def keyless_policy(path: Path, *, tsa_root: Path, identity: str = BEACON, sigstore: dict | None = None) -> Path:
    document = {
        "version": 1,
        "signers": [{"name": "ci", "keyless": {"identity": identity, "issuer": GITHUB_ISSUER}}],
        "tsa_roots": [{"name": "tsa", "certificate": tsa_root.read_text()}],
        "sigstore": sigstore or {"instance": "staging"},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_trust_policy_names_identity_issuer_and_root(tmp_path, tsa):
    shutil.copy(shipped_trusted_root("staging"), tmp_path / "root.json")
    policy = load_trust_policy(keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem", sigstore={"trusted_root": "root.json"}))
    assert policy.keyless_identities() == [KeylessIdentity("ci", BEACON, GITHUB_ISSUER)]
    assert policy.sigstore_root.trusted_root_json == (tmp_path / "root.json").read_text()
    verify_keyless_bundle(DSSE_BUNDLE.read_bytes(), identities=policy.keyless_identities(), root=policy.sigstore_root)


def test_pinned_root_inside_the_evidence_repository_is_refused(tmp_path, tsa, repo):
    shutil.copy(shipped_trusted_root("staging"), repo / "root.json")
    trust = keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem", sigstore={"trusted_root": str(repo / "root.json")})
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(trust, evidence_repository=repo)


def test_cli_trust_init_with_keyless_identity(cli, tmp_path, tsa):
    trust = tmp_path / "trust.yaml"
    result = cli("trust", "init", str(trust), "--keyless-identity", BEACON, "--sigstore-instance", "staging", "--tsa-root", str(tsa.directory / "root.pem"), "--json")
    assert result.code == 0, result.err
    policy = load_trust_policy(trust)
    assert policy.keyless_identities()[0].identity == BEACON and policy.sigstore_root.instance == "staging"


# -- signing: the one place a test double stands in for Fulcio/Rekor/OIDC ------------------
class RecordingKeylessSigner(KeylessSigner):
    """KeylessSigner with its network call replaced (Fulcio/Rekor/OIDC cannot exist offline).

    The bundle is the real staging bundle with its DSSE envelope replaced by the record's
    own statement signed with a local key: well-formed, but not a Sigstore signature.
    """

    def __init__(self) -> None:
        super().__init__("not-a-real-token", instance="staging")
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.calls = 0

    def _sigstore_bundle(self, payload: bytes) -> str:
        self.calls += 1
        signature = self.key.sign(rec.pae(rec.PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        document = json.loads(DSSE_BUNDLE.read_bytes())
        document["dsseEnvelope"] = {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": rec.PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode()}],
        }
        return json.dumps(document)


@pytest.fixture()
def keyless_branch(repo, tsa):
    signer = RecordingKeylessSigner()
    build_deployment(repo, signer, tsa, steps=2)  # genesis, 2 steps, seal
    assert signer.calls == 4
    return repo


def test_keyless_records_store_bundle_envelope_and_timestamp(keyless_branch, tsa):
    from afdp.evidence.ledger import trailers
    from afdp.evidence.timestamp import load_certificates, verify_timestamp

    git = pygit2.Repository(str(keyless_branch))
    head = git.get(git.references[branch_ref("api", "d-42")].target)
    for entry in read_branch(keyless_branch):
        assert set(entry.files) == {rec.ENVELOPE_FILE, rec.BUNDLE_FILE, "timestamp-0.tsr"}
        envelope = json.loads(entry.files[rec.ENVELOPE_FILE])
        bundle = json.loads(entry.files[rec.BUNDLE_FILE])["dsseEnvelope"]
        assert envelope["signatures"][0]["keyid"] == KEYLESS_KEYID
        assert envelope["payload"] == bundle["payload"]
        assert envelope["signatures"][0]["sig"] == bundle["signatures"][0]["sig"]
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        verify_timestamp(entry.files["timestamp-0.tsr"], signature, load_certificates((tsa.directory / "root.pem").read_bytes()))
    assert trailers(head.message)["AFDP-Signer"] == f"sigstore:staging {BEACON}"
    assert head.gpg_signature == (None, None)  # keyless: no key to sign the commit with


def test_verify_rejects_a_bundle_that_is_not_a_real_sigstore_signature(keyless_branch, tsa, tmp_path):
    trust = keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem")
    report = check_branch(keyless_branch, service="api", deployment="d-42", policy=load_trust_policy(trust))
    assert {f.check for f in report.failures} == {"keyless.signature"}
    assert {f.sequence for f in report.failures} == {0, 1, 2, 3}


def test_verify_names_an_untrusted_keyless_identity(keyless_branch, tsa, tmp_path):
    trust = keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem", identity="https://github.com/example/app/.github/workflows/deploy.yml@refs/heads/main")
    report = check_branch(keyless_branch, service="api", deployment="d-42", policy=load_trust_policy(trust))
    assert {f.check for f in report.failures} == {"keyless.identity"}


def test_real_bundle_grafted_onto_a_record_fails(keyless_branch, tsa, tmp_path):
    # A genuine, verifying Sigstore bundle, but over another statement than the record's.
    entries = read_branch(keyless_branch)
    entries[1] = with_file(entries[1], rec.BUNDLE_FILE, DSSE_BUNDLE.read_bytes())
    write_branch(keyless_branch, entries)
    trust = keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem")
    report = check_branch(keyless_branch, service="api", deployment="d-42", policy=load_trust_policy(trust))
    record_1 = {f.check: f.reason for f in report.failures if f.sequence == 1}
    assert record_1 == {"keyless.bundle": "the bundle signs another envelope than envelope.json"}


def test_keyless_record_without_bundle_fails(keyless_branch, tsa, tmp_path):
    entries = read_branch(keyless_branch)
    files = dict(entries[2].files)
    del files[rec.BUNDLE_FILE]
    entries[2] = type(entries[2])(entries[2].message, entries[2].directory, files)
    write_branch(keyless_branch, entries)
    trust = keyless_policy(tmp_path / "trust.yaml", tsa_root=tsa.directory / "root.pem")
    report = check_branch(keyless_branch, service="api", deployment="d-42", policy=load_trust_policy(trust))
    assert (2, "keyless.bundle") in {(f.sequence, f.check) for f in report.failures}


def test_bundle_in_a_key_signed_record_is_unexpected(repo, signer, tsa, trust_file):
    build_deployment(repo, signer, tsa, steps=1)
    entries = read_branch(repo)
    entries[1] = with_file(entries[1], rec.BUNDLE_FILE, DSSE_BUNDLE.read_bytes())
    write_branch(repo, entries)
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file))
    assert any(f.sequence == 1 and f.check == "layout" and rec.BUNDLE_FILE in f.reason for f in report.failures)


# -- no OIDC token: one clear error, exit 3, nothing written --------------------------------
_CI_VARIABLES = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME", "SIGSTORE_ID_TOKEN")


@pytest.mark.parametrize("github", [False, True], ids=["no-ci", "github-without-id-token-permission"])
def test_keyless_without_oidc_token_writes_nothing(cli, repo, tsa, tmp_path, monkeypatch, github):
    for name in _CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if github:
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result_file = tmp_path / "r.json"
    result_file.write_text("{}")
    result = cli("record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--step", "s", "--result", str(result_file), "--keyless", "--tsa", tsa.url)
    assert result.code == 3, result.err
    assert "id-token: write" in result.err and len(result.err.strip().splitlines()) == 1
    assert pygit2.Repository(str(repo)).references.get(branch_ref("api", "d-1")) is None
    with pytest.raises(SigningError):
        KeylessSigner.from_environment()


def test_signer_option_usage_errors(cli, repo, tsa, keys, tmp_path):
    result_file = tmp_path / "r.json"
    result_file.write_text("{}")
    base = ["record", "--repo", str(repo), "--service", "api", "--deployment", "d-1", "--step", "s", "--result", str(result_file), "--tsa", tsa.url]
    neither = cli(*base)
    assert neither.code == 2 and "--keyless" in neither.err
    both = cli(*base, "--key", str(keys / "dev.key"), "--keyless")
    assert both.code == 2 and "not both" in both.err
    bad_instance = cli(*base, "--key", "sigstore:elsewhere")
    assert bad_instance.code == 2 and "sigstore:staging" in bad_instance.err


def test_verify_help_does_not_import_sigstore():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "afdp", "verify", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in {"sigstore", "prefect", "pygit2"}}
