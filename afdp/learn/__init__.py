"""Learning from evidence: datasets, similar deployments, predictions and patterns.

Every number learned here comes from evidence branches that verified against the
caller's trust policy; unverifiable branches are left out and counted, never used.
This package sits between the pipeline (whose predictive steps use it) and the
verifier/workflow packages below it (docs/architecture.md).
"""
