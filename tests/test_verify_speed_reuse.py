"""Work verification no longer repeats gives the same answers as the work it replaced.

- The time-stamp token's DER elements are read in place (``timestamp.der._read_element``),
  and read exactly as asn1crypto's parser reads them, or refused where it refuses.
- The auditor's TSA roots are fingerprinted once per verify run, not once per token;
  other roots (other certificate objects) are still told apart.
"""

from __future__ import annotations

import datetime as dt
import types

import pygit2
import pytest
from asn1crypto import parser as asn1_parser
from conftest import build_deployment
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from test_verify_speed_caches import SIGNATURE, at, pki  # noqa: F401 - pki is a fixture

from afdp.evidence.notary import EmbeddedTSA
from afdp.evidence.store.read import plain_commit
from afdp.evidence.timestamp import chains, verify_timestamp
from afdp.evidence.timestamp.der import _read_element


def _reference(data: bytes, at: int) -> tuple[tuple[int, bool, int, bytes, bytes], int] | None:
    """asn1crypto's reading of the element at ``data[at:]`` (None: it refuses, or it is
    an indefinite length, which DER forbids)."""
    try:
        klass, method, tag, header, contents, trailer = asn1_parser.parse(data[at:])
    except ValueError:
        return None
    if trailer:
        return None
    return (klass, method == 1, tag, header, contents), at + len(header) + len(contents)


def _ours(data: bytes, at: int) -> tuple[tuple[int, bool, int, bytes, bytes], int] | None:
    try:
        element, end = _read_element(data, at)
    except ValueError:
        return None
    return (element.klass, element.constructed, element.tag, element.header, element.contents), end


def _every_offset(data: bytes) -> list[tuple[bytes, int]]:
    """Every element of ``data`` (recursively into constructed ones), as (buffer, offset)."""
    found, stack = [], [data]
    while stack:
        buffer = stack.pop()
        at = 0
        while at < len(buffer):
            reference = _reference(buffer, at)
            if reference is None:
                break
            found.append((buffer, at))
            (_, constructed, _, _, contents), at = reference
            if constructed:
                stack.append(contents)
    return found


def test_every_element_of_a_real_token_is_read_as_asn1crypto_reads_it(pki):  # noqa: F811
    root, tsa, _, now = pki
    token = at(tsa, now)
    offsets = _every_offset(token)
    assert len(offsets) > 30  # a whole token: status, SignedData, certificates, SignerInfo
    for buffer, offset in offsets:
        assert _ours(buffer, offset) == _reference(buffer, offset)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",  # no length
        b"\x30\x05\x02\x01",  # shorter than its length
        b"\x30\x80\x02\x01\x01\x00\x00",  # indefinite length: not DER
        b"\x30\x82\x00",  # long form cut short
        b"\x1f",  # high tag number, cut short
        b"\x1f\x80\x01\x00",  # high tag number, not minimal
        b"\x1f\x1e\x00",  # high tag number below 31: not minimal
        b"\x9f\x81\x00\x01\x07",  # high tag number (128), context class
        b"\x04\x81\x01\x07",  # long form of a short length
    ],
)
def test_malformed_and_unusual_elements_are_read_or_refused_as_asn1crypto_does(data):
    assert _ours(data, 0) == _reference(data, 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=8))
def test_any_bytes_are_read_or_refused_as_asn1crypto_does(data, offset):
    offset = min(offset, len(data))
    assert _ours(data, offset) == _reference(data, offset)


def test_roots_are_fingerprinted_once_for_a_run_of_tokens(pki, monkeypatch):  # noqa: F811
    root, tsa, _, now = pki
    counted = types.SimpleNamespace(SHA256_calls=0)

    def counting_sha256() -> hashes.SHA256:
        counted.SHA256_calls += 1
        return hashes.SHA256()

    monkeypatch.setattr(chains, "hashes", types.SimpleNamespace(SHA256=counting_sha256, Hash=hashes.Hash))
    monkeypatch.setattr(chains, "_last_roots", None)
    roots = [root]
    tokens = [at(tsa, now + dt.timedelta(seconds=i)) for i in range(5)]
    first = verify_timestamp(tokens[0], SIGNATURE, roots)
    after_first = counted.SHA256_calls
    assert after_first >= 1
    for token in tokens[1:]:
        assert verify_timestamp(token, SIGNATURE, roots).tsa_name == first.tsa_name
    assert counted.SHA256_calls == after_first, "the same roots must not be fingerprinted again"
    # a trust dropped from the table is built again for the same roots
    chains._trusts.clear()
    assert verify_timestamp(tokens[1], SIGNATURE, roots).gen_time == verify_timestamp(tokens[1], SIGNATURE, roots).gen_time
    assert chains._trust(roots) is chains._trusts[chains._last_roots[1]]


def test_other_root_objects_are_fingerprinted_and_told_apart(pki):  # noqa: F811
    root, tsa, _, now = pki
    token = at(tsa, now)
    verify_timestamp(token, SIGNATURE, [root])
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another root")])
    other = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(9).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    assert chains._trust([other]) is not chains._trust([root])
    from afdp.evidence.timestamp import TimestampVerificationError

    with pytest.raises(TimestampVerificationError) as caught:
        verify_timestamp(token, SIGNATURE, [other])
    assert caught.value.check == "timestamp.chain"
    # the same certificate as a new object (read again from its PEM) is the same trust
    again = x509.load_pem_x509_certificate(root.public_bytes(serialization.Encoding.PEM))
    assert chains._trust([again]) is chains._trust([root])
    assert verify_timestamp(token, SIGNATURE, [again]).tsa_name == "CN=speed-cache tsa"


def test_an_embedded_tsa_token_still_reads_as_a_granted_token(tmp_path):
    from afdp.evidence.notary import init_tsa

    init_tsa(tmp_path)
    tsa = EmbeddedTSA.load(tmp_path)
    token = at(tsa, dt.datetime.now(dt.UTC).replace(microsecond=0))
    parts = chains._signer_parts(token)
    assert parts is not None and parts.signer_count == 1 and parts.bare_status and parts.bare_signer


# -- the commit read once: plain_commit against libgit2 -----------------------------------
_TREE = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree
_SSH = [b"-----BEGIN SSH SIGNATURE-----", b"U1NIU0lHAAAAAQ", b"", b"AAAAA==", b"-----END SSH SIGNATURE-----"]

_header_line = st.sampled_from(
    [
        b"author A U Thor <a@example.com> 1700000000 +0000",
        b"committer AFDP <afdp@evidence.invalid> 1700000000 +0000",
        b"encoding ISO-8859-1",
        b"gpgsig-sha256 abc",
        b"gpgsigx y",
        b"mergetag object " + b"1" * 40,
        b"x-extra gpgsig here",
    ]
)


@st.composite
def _raw_commits(draw: st.DrawFn) -> bytes:
    lines = [b"tree " + draw(st.sampled_from([_TREE, _TREE.upper(), b"zz" * 20]))]
    lines += [b"parent " + draw(st.sampled_from([b"a" * 40, b"b" * 40, b"A" * 40])) for _ in range(draw(st.integers(0, 2)))]
    rest = [
        b"author A U Thor <a@example.com> 1700000000 +0000",
        b"committer AFDP <afdp@evidence.invalid> 1700000000 +0000",
        *draw(st.lists(_header_line, max_size=3)),
    ]
    if draw(st.booleans()):
        signature = draw(st.lists(st.sampled_from(_SSH), min_size=1, max_size=5))
        block = [b"gpgsig " + signature[0], *(b" " + part for part in signature[1:])]
        at = draw(st.integers(0, len(rest)))
        rest[at:at] = block
    if draw(st.booleans()):  # a late parent header: libgit2 reads parents only after tree
        rest.insert(draw(st.integers(0, len(rest))), b"parent " + b"c" * 40)
    message = draw(
        st.lists(st.sampled_from([b"summary", b"", b"gpgsig in the message", b" indented", b"AFDP-Digest: sha256:00"]), max_size=4)
    )
    data = b"\n".join(lines + rest) + b"\n\n" + b"\n".join(message) + (b"\n" if draw(st.booleans()) else b"")
    if draw(st.integers(0, 9)) == 0:
        data = data.replace(b"summary", b"sum\0mary")
    return data


def _agrees_with_libgit2(repo: pygit2.Repository, data: bytes) -> bool:
    """True when plain_commit gives no answer, or libgit2's (tree, parents, signature)."""
    oid = repo.odb.write(pygit2.enums.ObjectType.COMMIT, data)
    plain = plain_commit(data)
    try:
        commit = repo.get(oid)
    except (pygit2.GitError, ValueError):
        return True  # libgit2 cannot parse it: history() fails the branch before this pass
    assert isinstance(commit, pygit2.Commit)
    if plain is None:
        return True
    assert plain.tree == commit.tree_id.raw
    assert list(plain.parents) == [p.raw for p in commit.parent_ids]
    assert (plain.signature, plain.signed) == commit.gpg_signature
    return True


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    return pygit2.init_repository(str(tmp_path_factory.mktemp("plain") / "r.git"), bare=True)


@settings(max_examples=400, deadline=None)
@given(_raw_commits())
def test_a_commit_read_once_gives_libgit2s_tree_parents_and_signature(bare, data):
    assert _agrees_with_libgit2(bare, data)


def test_plain_commit_answers_for_afdp_commits_and_agrees(repo, signer, tsa):
    """Every commit AFDP writes is read once (the plain form), with libgit2's answers."""
    build_deployment(repo, signer, tsa, steps=3)
    git = pygit2.Repository(str(repo))
    head = git.references["refs/heads/afdp/api/d-42"].peel()
    seen = 0
    for commit in git.walk(head.id):
        data = git.odb.read(commit.id)[1]
        plain = plain_commit(data)
        assert plain is not None and plain.signature is not None
        assert (plain.signature, plain.signed) == commit.gpg_signature
        assert plain.tree == commit.tree_id.raw and list(plain.parents) == [p.raw for p in commit.parent_ids]
        seen += 1
    assert seen == 5


@pytest.mark.parametrize(
    "data",
    [
        b"tree " + _TREE + b"\nauthor a <b> 1 +0000\ncommitter c <d> 1 +0000\n\ngpgsig in the message\n",
        b"tree " + _TREE + b"\nauthor a <b> 1 +0000\ncommitter c <d> 1 +0000\ngpgsig-sha256 x\ngpgsig y\n\nm\n",
        b"tree " + _TREE + b"\nauthor a <b> 1 +0000\ncommitter c <d> 1 +0000\n\nm\0\n",
        b"tree " + _TREE.upper() + b"\nauthor a <b> 1 +0000\ncommitter c <d> 1 +0000\n\nm\n",
        b"tree " + _TREE + b"\nauthor a <b> 1 +0000\ncommitter c <d> 1 +0000\nno blank line",
    ],
)
def test_unusual_commits_are_left_to_libgit2(data):
    assert plain_commit(data) is None


def test_the_verifier_reads_each_commit_object_once(repo, signer, tsa, trust_file, monkeypatch):
    """Counted on the real repository: the per-record pass reads each commit's bytes once
    (it read them up to three times: parsed, raw for the message, raw again for the
    signature) and parses no commit through libgit2 when the commits are AFDP's."""
    from afdp.evidence.store import read as store_read
    from afdp.evidence.trust import load_trust_policy
    from afdp.verify import verifier

    build_deployment(repo, signer, tsa, steps=6)
    commits = {c.id.raw for c in pygit2.Repository(str(repo)).walk(pygit2.Repository(str(repo)).references["refs/heads/afdp/api/d-42"].peel().id)}
    raw_reads: list[bytes] = []
    parsed: list[bytes] = []
    original_raw = store_read.StoreReader._raw

    def counting_raw(self, oid):
        raw = oid.raw if isinstance(oid, pygit2.Oid) else oid
        if raw in commits:
            raw_reads.append(raw)
        return original_raw(self, oid)

    class CountingRepository(pygit2.Repository):
        # the real repository; notes which commits are parsed through libgit2
        def get(self, key, default=None):
            found = super().get(key, default)
            if isinstance(found, pygit2.Commit):
                parsed.append(found.id.raw)
            return found

    original_init = store_read.StoreReader.__init__

    def init(self, path):
        original_init(self, path)
        self.repo = CountingRepository(str(self.repo.path))

    monkeypatch.setattr(store_read.StoreReader, "_raw", counting_raw)
    monkeypatch.setattr(store_read.StoreReader, "__init__", init)
    report = verifier.check_branch(repo, service="api", deployment="d-42", policy=load_trust_policy(trust_file), jobs=1)
    assert report.ok and report.record_count == len(commits) == 8
    assert sorted(raw_reads) == sorted(commits)  # each commit's bytes read once
    # libgit2 parses commits only in the history walk (each once) and the head lookup
    assert len(parsed) <= len(commits) + 1
