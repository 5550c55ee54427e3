"""The evidence core: everything that makes a record, proves it and stores it.

One module per concern, in the order a record goes through them:

- :mod:`.records` -- the record model (statement, predicate, subject digests) and
  :mod:`.canonical` -- RFC 8785 canonical JSON and SHA-256 digests;
- :mod:`.schemas` -- the JSON Schemas every document is checked against;
- :mod:`.signing` -- DSSE signers (keys, KMS URIs through securesystemslib),
  :mod:`.keyless` -- keyless Sigstore signing and offline bundle verification,
  :mod:`.sshsig` -- SSH signatures on the evidence commits (plain ``git`` checks them);
- :mod:`.timestamp` -- RFC3161 time-stamps (request, verify) and :mod:`.notary` -- the
  embedded TSA;
- :mod:`.names` -- branch and ref names, :mod:`.store` -- the Git store (pygit2: reads,
  compare-and-swap writes, the writer lock, size caps), :mod:`.ledger` -- appending,
  opening and sealing a deployment's branch;
- :mod:`.trust` -- the auditor's trust policy (keys, identities, TSA roots).

Nothing here imports the workflow language, the pipeline or the audit surfaces
(import-linter enforces it, see docs/architecture.md); :mod:`afdp.verify` reads what
this package writes.
"""
