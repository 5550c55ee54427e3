"""Safe names for services, deployments and steps, and the branch each deployment gets.

Names end up in Git ref names, tree paths and commit messages, so they are checked
against a strict allow-list rather than a deny-list: ASCII letters and digits, then
letters, digits, ``.``, ``_`` and ``-``; at most 100 characters; no ``..``; not ending
in ``.lock`` or ``.``. Anything else is refused with a clear error.

Text that is no name but still enters evidence (a deployer, a version, a changed file's
path, a commit message) is checked by :func:`check_text`: the one rule
(:func:`afdp.errors.hidden_character`) that keeps controls, DEL, C1, bidi and zero-width
characters out of what is signed, so evidence never shows other than it reads.
"""

from __future__ import annotations

import re

from afdp.errors import UsageError, describe_character, hidden_character

BRANCH_PREFIX = "refs/heads/afdp/"
#: ``afdp/models/<service>`` holds the impact models of ``<service>`` (afdp.learn.model):
#: the service name ``models`` is reserved for those branches, whose records are all
#: ``model`` steps; no deployment evidence may be written under it.
MODELS_SERVICE = "models"
MODEL_STEP = "model"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe name.

    Raises:
        UsageError: naming ``what`` (service, deployment, step) and the offending value.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise UsageError(
            f"invalid {what} name {value!r}: use 1-100 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    if ".." in value or value.endswith((".lock", ".")):
        raise UsageError(
            f"invalid {what} name {value!r}: '..', a trailing '.' or '.lock' is not allowed"
        )
    return value


def check_text(value: str, *, what: str, free_text: bool = False) -> str:
    """Return ``value`` if it shows as itself (:func:`afdp.errors.hidden_character`).

    ``free_text``: a message or title, which may also hold the zero-width joiners of emoji
    and of scripts that need them; a name, id, path, person or version may not.

    Raises:
        UsageError: naming ``what`` and the refused character (never printing it raw).
    """
    char = hidden_character(value, free_text=free_text)
    if char is not None:
        raise UsageError(
            f"{what} holds {describe_character(char)}: evidence text may hold no control, "
            "bidi or zero-width character (it would show other than it reads)"
        )
    return value


def check_not_models(service: str, step: str | None) -> None:
    """Refuse deployment evidence under the reserved service name ``models``.

    ``step`` is the step of the record to be written (None: opening a deployment branch).

    Raises:
        UsageError: ``service`` is ``models`` and the record is not a ``model`` step.
    """
    if service == MODELS_SERVICE and step != MODEL_STEP:
        raise UsageError(
            f"service name {MODELS_SERVICE!r} is reserved: afdp/{MODELS_SERVICE}/<service> holds the impact "
            "models of <service>, not deployment evidence; choose another service name"
        )


def branch_ref(service: str, deployment: str) -> str:
    """Return ``refs/heads/afdp/<service>/<deployment>`` after checking both names."""
    return f"{BRANCH_PREFIX}{check_name(service, what='service')}/{check_name(deployment, what='deployment')}"


def parse_branch_ref(ref: str) -> tuple[str, str] | None:
    """Return ``(service, deployment)`` for an AFDP branch ref, or None for any other ref."""
    if not ref.startswith(BRANCH_PREFIX):
        return None
    parts = ref[len(BRANCH_PREFIX) :].split("/")
    if len(parts) != 2:
        return None
    try:
        return check_name(parts[0], what="service"), check_name(parts[1], what="deployment")
    except UsageError:
        return None
