"""``afdp demo``: the whole story on one machine (:mod:`.run`) against a small service
that exports Prometheus metrics (:mod:`.service`), driven by ``workflow.yaml``."""
