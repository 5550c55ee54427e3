"""Evidence packages: one deployment's branch, the trust to verify it, a report, a README.

``afdp export`` writes::

    pkg/
      README.md                      what this is, the exact commands to check it
      <service>-<deployment>.bundle  git bundle (v2) of refs/heads/afdp/<service>/<deployment>
      report.html                    the compliance report (verdict first)
      trust/trust-policy.yaml        the trust policy the export was verified with
      trust/keys/<name>.pem          each signer's public key named by that policy
      trust/tsa-roots.pem            the TSA root certificates it names (for openssl ts)
      trust/allowed_signers          git allowed-signers (for git log --show-signature)
      trust/sigstore-trusted-root.json   the pinned Sigstore trusted root, if the policy pins one

``afdp verify --bundle pkg/`` verifies it with nothing else installed: the bundle is
read by this module (header, then the pack: checksum, objects, deltas; every size
bounded, see ``MAX_*``) into a temporary bare repository and verified like any evidence
repository. With the auditor's ``--trust`` the package's own policy is not read; without
it the package's policy is used, and the verdict says "not independent" on its first
line, lists the fingerprints to compare out of band, and never exits 0 (docs/audit.md).

Why the bundle is written here rather than with ``git bundle create``: pygit2 has no
bundle API, but its PackBuilder writes the pack, and a v2 bundle is a short text header
in front of a pack; so neither exporting nor verifying needs a git binary, and plain git
(``git bundle verify``, ``git clone``) reads the result. Bundles made by git itself
(deltified packs) are read too.

The package's modules, each importing only those before it: :mod:`.files` (a package's
file names, reading its files safely), :mod:`.bundle` (writing and reading git bundles and
packs, the ``MAX_*`` limits), :mod:`.readme`, :mod:`.fingerprints` (what an auditor
compares out of band), :mod:`.writer` (``afdp export``) and :mod:`.reader` (``afdp verify
--bundle``). Every name is importable from here as before; a limit is read by the module
that defines it (``bundle.MAX_TOTAL_BYTES``, ``reader.MAX_POLICY_BYTES``).
"""

from __future__ import annotations

# Every public name the single module had is importable from the package, and the
# private ones tests use; ``noqa``: re-exported, not used here.
from afdp.audit.export.bundle import (  # noqa: F401
    BUNDLE_V2,
    BUNDLE_V3,
    MAX_BUNDLE_BYTES,
    MAX_DELTA_INSTRUCTIONS,
    MAX_OBJECT_BYTES,
    MAX_OBJECTS,
    MAX_TOTAL_BYTES,
    _inflate,
    _varint_size,
    read_bundle,
    read_pack,
    write_bundle,
)
from afdp.audit.export.files import (  # noqa: F401
    README_FILE,
    REPORT_FILE,
    SIGSTORE_ROOT_FILE,
    TRUST_DIR,
    TRUST_POLICY_FILE,
    BundleError,
    read_regular,
)
from afdp.audit.export.fingerprints import fingerprint_lines, trust_fingerprints  # noqa: F401
from afdp.audit.export.reader import (  # noqa: F401
    MAX_POLICY_BYTES,
    NOT_INDEPENDENT,
    OpenedPackage,
    PackageVerification,
    open_package,
    verify_package,
)
from afdp.audit.export.writer import ExportedPackage, export_package  # noqa: F401
