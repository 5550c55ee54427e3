"""The trust policy: unique signers, keyless signers matched by identity and issuer, and
no policy taken from inside the evidence repository however --repo names it."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import build_deployment

from afdp.errors import ConfigurationError, UsageError
from afdp.evidence.keyless import GITHUB_ISSUER
from afdp.evidence.trust import load_trust_policy, parse_trust_policy

ASSETS = Path("/work/shared/assets/sigstore")
DSSE_BUNDLE = ASSETS / "dsse-statement.txt.sigstore.json"
BEACON = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
OTHER = "https://github.com/org/api/.github/workflows/deploy.yml@refs/heads/main"


def document(signers, tsa) -> dict:
    return {
        "version": 1,
        "signers": signers,
        "tsa_roots": [{"name": "tsa", "certificate": (tsa.directory / "root.pem").read_text()}],
        "sigstore": {"instance": "staging"},
    }


# -- 5. duplicate signer names; keyless signers by identity + issuer -------------------------


def test_duplicate_signer_names_are_refused(tsa, tmp_path, keys, cli, repo):
    pem = (keys / "dev.key.pub").read_text()
    other = (keys / "attacker.key.pub").read_text()
    doc = document([{"name": "ci", "public_key": pem}, {"name": "ci", "public_key": other, "services": ["billing"]}], tsa)
    with pytest.raises(ConfigurationError, match="signers 'ci' and 'ci' have the same name"):
        parse_trust_policy(doc, source="inline")
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli("verify", "--repo", str(repo), "--all", "--trust", str(path))
    assert result.code == 2 and "same name" in result.err


def test_duplicate_keyless_names_are_refused(tsa):
    doc = document(
        [
            {"name": "ci", "keyless": {"identity": OTHER, "issuer": GITHUB_ISSUER}},
            {"name": "ci", "keyless": {"identity": BEACON, "issuer": GITHUB_ISSUER}, "services": ["billing"]},
        ],
        tsa,
    )
    with pytest.raises(ConfigurationError, match="same name"):
        parse_trust_policy(doc, source="inline")


def test_same_key_or_identity_twice_is_refused(tsa, keys):
    pem = (keys / "dev.key.pub").read_text()
    with pytest.raises(ConfigurationError, match="same key"):
        parse_trust_policy(document([{"name": "a", "public_key": pem}, {"name": "b", "public_key": pem}], tsa), source="inline")
    twice = [{"name": n, "keyless": {"identity": BEACON, "issuer": GITHUB_ISSUER}} for n in ("a", "b")]
    with pytest.raises(ConfigurationError, match="same keyless identity"):
        parse_trust_policy(document(twice, tsa), source="inline")


@pytest.mark.skipif(not DSSE_BUNDLE.exists(), reason=f"real Sigstore bundle not found in {ASSETS}")
def test_keyless_service_limit_follows_the_identity_not_the_name(tsa):
    # A real (staging) Sigstore bundle, verified offline: the beacon identity may sign only
    # for billing, so its record on api fails `signer`, whatever other signers are listed.
    from sigstore.models import Bundle

    from afdp.verify.checks import RecordFacts, RecordInput, _check_keyless

    # as AFDP writes a bundle: sigstore's own encoding (the published asset is indented)
    bundle = Bundle.from_json(DSSE_BUNDLE.read_bytes()).to_json().encode()
    envelope = json.loads(bundle)["dsseEnvelope"]
    payload, signature = base64.b64decode(envelope["payload"]), base64.b64decode(envelope["signatures"][0]["sig"])
    item = RecordInput(0, "records/000/000000-genesis", {"bundle.sigstore.json": bundle}, "api", "d-1")
    policy = parse_trust_policy(
        document(
            [
                {"name": "deploy", "keyless": {"identity": OTHER, "issuer": GITHUB_ISSUER}, "services": ["*"]},
                {"name": "beacon", "keyless": {"identity": BEACON, "issuer": GITHUB_ISSUER}, "services": ["billing"]},
            ],
            tsa,
        ),
        source="inline",
    )
    facts = RecordFacts(0, item.directory)
    _check_keyless(item.files, envelope["payloadType"], payload, signature, item, policy, facts)
    assert facts.signer == "beacon"
    assert facts.failures == [("signer", "signer beacon may not sign for service api")]
    assert policy.keyless_signer_for(BEACON, GITHUB_ISSUER).name == "beacon"
    assert policy.keyless_signer_for(BEACON, "https://accounts.google.com") is None


def test_trust_init_keeps_every_keyless_identity(cli, tmp_path, tsa):
    trust = tmp_path / "trust.yaml"
    second = "https://github.com/org/billing/.github/workflows/deploy.yml@refs/heads/main"
    result = cli(
        "trust", "init", str(trust), "--keyless-identity", OTHER, "--keyless-identity", second, "--keyless-identity", BEACON,
        "--tsa-root", str(tsa.directory / "root.pem"), "--json",
    )
    assert result.code == 0, result.err
    policy = load_trust_policy(trust)
    assert [i.identity for i in policy.keyless_identities()] == [OTHER, second, BEACON]
    names = [s.name for s in policy.signers]
    assert len(set(names)) == 3 and names[1] == names[0] + "-2"


def test_trust_init_issuers_per_identity(cli, tmp_path, tsa):
    trust = tmp_path / "trust.yaml"
    root = str(tsa.directory / "root.pem")
    result = cli("trust", "init", str(trust), "--keyless-identity", OTHER, "--keyless-identity", BEACON,
                 "--keyless-issuer", "https://a.example", "--keyless-issuer", "https://b.example", "--tsa-root", root)
    assert result.code == 0, result.err
    assert [(i.identity, i.issuer) for i in load_trust_policy(trust).keyless_identities()] == [(OTHER, "https://a.example"), (BEACON, "https://b.example")]
    result = cli("trust", "init", str(tmp_path / "t2.yaml"), "--keyless-identity", OTHER, "--keyless-identity", BEACON,
                 "--keyless-issuer", "https://a.example", "--keyless-issuer", "https://b.example", "--keyless-issuer", "https://c.example", "--tsa-root", root)
    assert result.code == 2


def test_trust_init_two_keys_with_the_same_stem(cli, tmp_path, tsa, keys):
    import shutil

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(keys / "dev.key.pub", tmp_path / "a" / "dev.key.pub")
    shutil.copy(keys / "attacker.key.pub", tmp_path / "b" / "dev.key.pub")
    trust = tmp_path / "trust.yaml"
    result = cli("trust", "init", str(trust), "--key", str(tmp_path / "a" / "dev.key.pub"), "--key", str(tmp_path / "b" / "dev.key.pub"), "--tsa-root", str(tsa.directory / "root.pem"))
    assert result.code == 0, result.err
    assert [s.name for s in load_trust_policy(trust).signers] == ["dev", "dev-2"]


# -- 10. the trust policy inside the evidence repository, however --repo names it ------------


@pytest.mark.parametrize("given", ["sub", ".git/refs", ".git", "sub/deeper", "."])
def test_policy_inside_the_repository_is_refused_whatever_repo_path(repo, signer, tsa, trust_file, cli, given):
    build_deployment(repo, signer, tsa, steps=1)
    (repo / "sub" / "deeper").mkdir(parents=True)
    inside = repo / "trust.yaml"
    inside.write_text(trust_file.read_text())
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(inside, evidence_repository=repo / given)
    result = cli("verify", "--repo", str(repo / given), "--service", "api", "--deployment", "d-42", "--trust", str(inside))
    assert result.code == 2 and "inside the evidence repository" in result.err


def test_policy_in_a_bare_repositorys_git_dir_is_refused(tmp_path, trust_file):
    from afdp.evidence.store import init_repository

    bare = tmp_path / "bare.git"
    init_repository(bare, bare=True)
    inside = bare / "info" / "trust.yaml"
    inside.write_text(trust_file.read_text())
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(inside, evidence_repository=bare / "refs")


def test_symlink_inside_the_repository_is_refused(repo, trust_file):
    link = repo / "trust.yaml"
    os.symlink(trust_file, link)  # points outside, but the evidence writer chose it
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(link, evidence_repository=repo)


def test_symlink_outside_pointing_inside_is_refused(repo, trust_file, tmp_path):
    inside = repo / "trust.yaml"
    inside.write_text(trust_file.read_text())
    link = tmp_path / "link-trust.yaml"
    os.symlink(inside, link)
    with pytest.raises(UsageError, match="inside the evidence repository"):
        load_trust_policy(link, evidence_repository=repo)


def test_policy_outside_still_loads(repo, trust_file):
    assert load_trust_policy(trust_file, evidence_repository=repo / "sub").signers
