"""Every byte of every record file is covered by a signature or token, or re-derived and
compared (issue 9, item 1).

Attacks by someone with write access to the evidence repository (tests/tamper.py), on a
branch whose commits carry no Git signature (RSA-PSS key: nothing but the records binds
the commits), aimed at the LAST record (the seal), which no later record's ``prev``
binds. Real Git, real TSA over loopback HTTP.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest
from tamper import edit, with_file
from test_verify_hardening_unsigned_commits import branch, pss, report_of  # noqa: F401  (fixtures)

from afdp.canonical import canonical_bytes, sha256_hex

LAST = -1  # the seal


def _same_bytes_other_base64(text: str) -> str:
    """Another base64 spelling of the same bytes: set padding bits the decoder ignores."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    body = text.rstrip("=")
    pad = len(text) - len(body)
    assert pad in (1, 2), "the test needs a padded encoding"
    last = alphabet.index(body[-1])
    spare = (1 << (2 * pad)) - 1  # bits of the last character beyond the data
    assert last & spare == 0
    other = body[:-1] + alphabet[last | 1] + "=" * pad
    assert base64.b64decode(other) == base64.b64decode(text) and other != text
    return other


def _rewrite_envelope(entry, change):
    envelope = json.loads(entry.files["envelope.json"])
    change(envelope)
    data = canonical_bytes(envelope)  # still RFC 8785 canonical JSON
    message = re.sub(r"AFDP-Digest: sha256:[0-9a-f]{64}", f"AFDP-Digest: sha256:{sha256_hex(data)}", entry.message)
    return replace(with_file(entry, "envelope.json", data), message=message)


@pytest.mark.parametrize("field", ["payload", "sig"])
def test_non_canonical_base64_in_the_last_envelope_fails(branch, field):  # noqa: F811
    repo, trust = branch

    def change(envelope):
        holder, key = (envelope, "payload") if field == "payload" else (envelope["signatures"][0], "sig")
        if not holder[key].endswith("="):
            pytest.skip(f"the {field} needs padding for this spelling")
        holder[key] = _same_bytes_other_base64(holder[key])

    edit(repo, LAST, lambda e: _rewrite_envelope(e, change))
    report = report_of(repo, trust)
    assert report.state == "failed"
    failures = [(f.sequence, f.check, f.reason) for f in report.failures]
    assert any(check == "envelope" and "re-encoding" in reason for _, check, reason in failures), failures


@pytest.mark.parametrize(
    "spelling",
    [
        lambda s: s.rstrip("="),  # padding left out
        lambda s: s.replace("+", "-").replace("/", "_") if ("+" in s or "/" in s) else None,  # url-safe
        lambda s: s[:8] + "\n" + s[8:],  # a line break (MIME style)
    ],
    ids=["no-padding", "urlsafe", "newline"],
)
def test_other_base64_spellings_of_the_payload_fail(branch, spelling):  # noqa: F811
    repo, trust = branch

    def change(envelope):
        other = spelling(envelope["payload"])
        if other is None or other == envelope["payload"]:
            pytest.skip("this payload has nothing to respell")
        envelope["payload"] = other

    edit(repo, LAST, lambda e: _rewrite_envelope(e, change))
    report = report_of(repo, trust)
    assert report.state == "failed"
    assert {f.check for f in report.failures} & {"envelope"}, report.failures


def test_untampered_branch_still_verifies(branch):  # noqa: F811
    repo, trust = branch
    assert report_of(repo, trust).state == "verified"
