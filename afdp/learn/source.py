"""Where the learning commands get their history: the verified evidence of one service.

One function, so that similar, predict, insights and the predictive steps of a run all
read the history the same way: :func:`afdp.learn.history.load_history` over the
evidence repository, with the auditor's trust policy (a path is loaded here, refusing a
policy kept inside the evidence repository itself, as ``afdp verify`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def trust_of(repository: Path | str, trust_policy: Any) -> Any:
    """Return ``trust_policy`` loaded (a path) or as given (a loaded TrustPolicy).

    Raises:
        ConfigurationError: the policy file is missing, malformed or inside the repository.
    """
    if isinstance(trust_policy, (str, Path)):
        from afdp.evidence.trust import load_trust_policy

        return load_trust_policy(Path(trust_policy), evidence_repository=Path(repository))
    return trust_policy


def history_of(repository: Path | str, trust_policy: Path | str, *, service: str | None = None) -> Any:
    """Return the verified history (:class:`afdp.learn.history.History`) of ``service``
    (of every service when None).

    Raises:
        AfdpError: as :func:`afdp.learn.history.load_history` raises (no repository, ...).
    """
    from afdp.evidence.names import check_name
    from afdp.learn.history import load_history

    if service is not None:
        check_name(service, what="service")
    if not isinstance(trust_policy, (str, Path)):
        raise TypeError("load_history reads the trust policy from its file: pass the path")
    return load_history(Path(repository), trust_policy, services=None if service is None else [service])


__all__ = ["history_of", "trust_of"]
