"""Property tests for the readers of untrusted input (issue 9): any mutation of a real
evidence package or of a real branch's record files gives a result or one clear AFDP
error, never another exception or a hang. Bounded and derandomized for CI.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import build_deployment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tamper import edit, with_file

from afdp.audit.export import export_package, open_package
from afdp.errors import AfdpError
from afdp.evidence.trust import load_trust_policy
from afdp.verify.verifier import check_branch

SLOW = settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255), st.sampled_from(["flip", "cut", "insert"])),
    min_size=1, max_size=4,
)


def _mutate(data: bytes, changes) -> bytes:
    out = bytearray(data)
    for where, value, how in changes:
        if not out:
            break
        i = where % len(out)
        if how == "flip":
            out[i] ^= value or 1
        elif how == "cut":
            del out[i:]
        else:
            out[i:i] = bytes([value])
    return bytes(out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keys, tsa):
    from afdp.evidence.signing import load_signer
    from afdp.evidence.trust import write_trust_policy

    root = tmp_path_factory.mktemp("pkg")
    repo = root / "repo"
    import pygit2

    pygit2.init_repository(str(repo))
    build_deployment(repo, load_signer(str(keys / "dev.key")), tsa, steps=3)
    trust = root / "auditor" / "trust.yaml"
    trust.parent.mkdir()
    write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    out = root / "package"
    export_package(repo, service="api", deployment="d-42", trust=trust, out=out)
    return out, trust


@SLOW
@given(mutations, st.sampled_from(["bundle", "README.md"]))
def test_a_mutated_package_opens_or_fails_with_one_afdp_error(exported, tmp_path, changes, which):
    package, trust = exported
    copy = tmp_path / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(package, copy)
    target = next(copy.glob("*.bundle")) if which == "bundle" else copy / "README.md"
    target.write_bytes(_mutate(target.read_bytes(), changes))
    try:
        opened = open_package(copy, trust=trust)
    except AfdpError:
        return
    check_branch(opened.repository, service=opened.service, deployment=opened.deployment, policy=load_trust_policy(trust))


@settings(SLOW, max_examples=25)
@given(mutations, st.sampled_from(["envelope.json", "timestamp-0.tsr"]), st.integers(min_value=0, max_value=4))
def test_a_mutated_record_file_gives_a_report_never_an_exception(keys, tsa, tmp_path, changes, name, position):
    import pygit2

    from afdp.evidence.signing import load_signer
    from afdp.evidence.trust import write_trust_policy

    repo = tmp_path / "r"
    shutil.rmtree(repo, ignore_errors=True)
    pygit2.init_repository(str(repo))
    build_deployment(repo, load_signer(str(keys / "dev.key")), tsa, steps=3)
    trust = tmp_path / "trust.yaml"
    if not trust.exists():
        write_trust_policy(trust, keys=[keys / "dev.key.pub"], tsa_roots=[tsa.directory / "root.pem"])
    edit(repo, position, lambda e: with_file(e, name, _mutate(e.files.get(name, b"{}"), changes)))
    report = check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust))
    assert report.state in ("failed", "verified")
