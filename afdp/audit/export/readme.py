"""The README of an evidence package: writing it, and reading back the branch it names.

:func:`_readme` is the package's README.md (what the package is, the fingerprints to
compare, the exact AFDP, git and openssl commands to check it); :func:`_named_branch`
reads the branch a package's README names, which its bundle must hold.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from afdp.audit.export.files import README_FILE, read_regular


def _readme(
    headline: str,
    service: str,
    deployment: str,
    ref: str,
    bundle: str,
    head: str,
    folder: str,
    fingerprints: list[str],
) -> str:
    branch = ref.removeprefix("refs/heads/")
    compare = "".join(f"- {line}\n" for line in fingerprints) or "- (the policy names none)\n"
    return f"""# AFDP evidence package: {service}/{deployment}

**{headline}**

| | |
|---|---|
| branch | `{ref}` |
| head commit | `{head}` |
| bundle | `{bundle}` (git bundle v2, the branch's whole history) |
| trust | `trust/trust-policy.yaml` (the policy this package was verified with), `trust/keys/*.pem`, `trust/tsa-roots.pem`, `trust/allowed_signers` |
| report | `report.html` (self-contained; open in any browser, no network needed) |

The trust material here is what the exporter trusted, and whoever wrote this package
wrote it too: on its own it proves that the package is consistent, not who made it.
Verify with your own trust policy, or compare the fingerprints below with keys and TSA
roots you obtained independently (from the signer's owner, the TSA's published root)
before accepting the package's policy.

## Verify with AFDP

```sh
# with AFDP installed (pip install afdp), nothing else is needed: no git, no network
afdp verify --bundle {folder}/{bundle} --trust /path/to/auditors-own-trust.yaml
```

Exit 0: every record's signature, RFC3161 time-stamp, digest chain and the seal verified
against your policy (the package's own policy is not read). Exit 1: a check failed; each
failure names the record, the check and the reason.

Without `--trust`, `afdp verify --bundle {folder}/` runs every check against the package's
own `trust/trust-policy.yaml`, prints `VERIFIED against the package's OWN trust policy —
not independent` (or FAILED ...) first, then the fingerprints to compare, and exits 1
whatever the checks say: nothing outside the package vouched for its keys. If the
fingerprints match ones you obtained independently, accept the package's policy
explicitly (exit 0 when every check passes):

```sh
afdp verify --bundle {folder}/ --trust {folder}/trust/trust-policy.yaml
```

### Fingerprints to compare out of band

{compare}
Public key SHA-256: `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`; SSH
fingerprint: `ssh-keygen -lf KEY.pub`; TSA root: `openssl x509 -in ROOT.pem -noout
-fingerprint -sha256 -subject`.

## Independent checks (plain git and openssl, no AFDP)

Run from inside this folder.

```sh
work=$(mktemp -d)

# 1. the bundle is a complete, well-formed git bundle (git needs a repository to run in)
git init -q "$work/check" && git -C "$work/check" bundle verify "$PWD/{bundle}"

# 2. read the evidence with plain git
git clone -q --bare {bundle} "$work/evidence.git"
git -C "$work/evidence.git" log --format='%h %s' {branch}

# 3. every commit carries an SSH signature by the record's signer
git -C "$work/evidence.git" -c gpg.format=ssh \\
    -c gpg.ssh.allowedSignersFile="$PWD/trust/allowed_signers" log --show-signature {branch}

# 4. every RFC3161 token is over its record's signature and chains to a trusted TSA root
git -C "$work/evidence.git" ls-tree -r --name-only {branch} | grep '\\.tsr$' | while read -r tsr; do
  record=${{tsr%/*}}
  git -C "$work/evidence.git" show "{branch}:$tsr" > "$work/token.tsr"
  git -C "$work/evidence.git" show "{branch}:$record/envelope.json" | python3 -c \\
    'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["signatures"][0]["sig"]))' \\
    > "$work/signature.bin"
  printf '%s: ' "$tsr"
  openssl ts -verify -in "$work/token.tsr" -data "$work/signature.bin" -CAfile trust/tsa-roots.pem
done
```

Each token must print `Verification: OK`. The token's message imprint is the SHA-256 of
the record's DSSE signature (the bytes `-data` names), so a token cannot be moved to
another record. Record digests (SHA-256 of `envelope.json`) chain each record to the one
before it (`prev`), and the last record, the seal, lists them all.
"""


_README_BRANCH = re.compile(r"^\| branch \| `(refs/[^`]+)` \|$", re.MULTILINE)


def _named_branch(folder: Path | None) -> str | None:
    """The branch the package README names (``| branch | `refs/...` |``), if it names one."""
    if folder is None:
        return None
    readme = folder / README_FILE
    if not os.path.lexists(readme):
        return None
    text = read_regular(readme, 1024 * 1024, "README").decode("utf-8", "replace")
    match = _README_BRANCH.search(text)
    return match.group(1) if match else None
