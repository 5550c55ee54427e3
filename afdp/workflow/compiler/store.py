"""The ``store`` step: where the run's results go.

``- store: results`` (the guide's Getting Started) keeps them on the evidence branch,
where every step result already is a signed, time-stamped record: validate notes it.
``store: {results: FILE}`` also writes the JSON results document to FILE under the
run's results directory (``afdp run --results-dir``, default the current directory);
``store: {url: https://...}`` also POSTs it there (host judged by the admission
policy's webhook host rule, like action webhooks; optional HMAC ``secret:``).
"""

from __future__ import annotations

from collections.abc import Callable

from afdp.workflow import catalog
from afdp.workflow.compiler.collectors import _Collectors
from afdp.workflow.compiler.common import _RawStep
from afdp.workflow.loader import DocPath
from afdp.workflow.model import Store


class _Store(_Collectors):
    """Store steps."""

    def store(self, item: _RawStep, where: Callable[[str], DocPath]) -> Store | None:
        p = item.params
        scope = self.base_scope(env=True, steps=True)
        results = p.get("results") if isinstance(p.get("results"), str) else None
        url = self.template(p.get("url"), where("url"), scope, secrets="url", bare_dollar=True)
        if url is not None:
            head = url.parts[0] if url.parts else ""
            if isinstance(head, str) and "://" in head or url.is_literal:
                self.check_url(url, "rest", where("url"), what="a store url")
            else:
                self.fail(
                    where("url"),
                    "a store url must start with http:// or https:// (only the rest of it may be interpolated)",
                )
                url = None
        secret = self.template(p.get("secret"), where("secret"), scope, secrets=True, bare_dollar=True)
        if secret is not None:
            if not secret.secret or any(not part.secret for part in secret.placeholders):
                self.fail(
                    where("secret"),
                    "a store secret must come from the environment, e.g. secret: ${env.AFDP_STORE_SECRET}; "
                    "a secret written in the workflow would be part of the evidence",
                )
                secret = None
            if "url" not in p:
                self.fail(where("secret"), "secret: signs the POST to url:; this store has no url:")
        timeout = self.duration(p.get("timeout", catalog.DEFAULT_ACTION_TIMEOUT), where("timeout"))
        if results is None and url is None:
            self.note(
                item.path,
                "store: results keeps the results on the evidence branch only (every step result "
                "is already a signed, time-stamped record there); to export them as well, write "
                "store: {results: results.json} (a JSON file under afdp run --results-dir) or "
                "store: {url: https://...} (the same JSON POSTed there)",
            )
        return Store(results, url, secret, timeout)
