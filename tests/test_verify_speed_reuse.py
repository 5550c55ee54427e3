"""Work verification no longer repeats gives the same answers as the work it replaced.

- The auditor's TSA roots are fingerprinted once per verify run, not once per token;
  other roots (other certificate objects) are still told apart.
"""

from __future__ import annotations

import datetime as dt
import types

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_verify_speed_caches import SIGNATURE, at, pki  # noqa: F401 - pki is a fixture

from afdp.evidence.notary import EmbeddedTSA
from afdp.evidence.timestamp import chains, verify_timestamp


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
