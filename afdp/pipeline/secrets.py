"""Secrets never reach evidence: one scrubber for every path a value takes to a record.

``${env.*}`` values are revealed only where a request is sent (a header, a URL's
user-info, a password, an HMAC key; the compiler refuses them anywhere else). What comes
back (an answer body, an error, a command's output) may still echo them, whole, cut
short or transformed. :class:`Scrubber` is the one mechanism that removes them:

1. every secret value (4 characters or more) is replaced by ``[redacted env.NAME]``;
2. so is every *fragment* of one: a prefix or a suffix of 6 or more characters (what a
   cut leaves of an echo; a letters-only run, and a URL secret's bare scheme, are left
   alone, see ``_scrub_fragments``),
   so a truncated echo never leaves part of a token behind. Scrub before cutting, and
   scrub again after;
3. :meth:`Scrubber.encoded` finds a secret in its common encodings (hex, base64 and
   URL-safe base64 at any alignment, URL-quoting): such a result is refused before it is
   signed (the runner records the step as failed, naming the variable, not the value).

Collectors, actions and the runner all build their scrubbing on this module.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

#: Shorter values are not scrubbed (a secret "1" would blank every 1 in the evidence).
MIN_SECRET = 4
#: A run of this many characters of a secret is a fragment worth removing.
MIN_FRAGMENT = 6
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redaction(name: str) -> str:
    """Return the text that stands for the secret ``env.NAME`` in evidence."""
    return f"[redacted env.{name}]"


@dataclass
class Scrubber:
    """Scrubs the values of named secrets (``{NAME: value}``) and their fragments."""

    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, env: Mapping[str, str] | None, names: Iterable[str]) -> Scrubber:
        """Return a scrubber for the variables ``names`` of ``env`` that are set."""
        env = env or {}
        return cls({name: env[name] for name in names if env.get(name)})

    def add(self, name: str, value: str | None) -> None:
        """Remember one more secret (ignored when unset)."""
        if value:
            self.secrets[name] = value

    def __bool__(self) -> bool:
        return any(len(v) >= MIN_SECRET for v in self.secrets.values())

    def _ordered(self) -> list[tuple[str, str]]:
        pairs = [(n, v) for n, v in self.secrets.items() if len(v) >= MIN_SECRET]
        return sorted(pairs, key=lambda pair: -len(pair[1]))

    def text(self, text: str) -> str:
        """Return ``text`` with every secret and every fragment of one redacted."""
        if not text:
            return text
        for name, value in self._ordered():
            if value in text:
                text = text.replace(value, redaction(name))
        for name, value in self._ordered():
            if len(value) >= MIN_FRAGMENT:
                text = _scrub_fragments(text, value, redaction(name))
        return text

    def value(self, value: Any) -> Any:
        """Return ``value`` (JSON-like: str, list, mapping; keys too) scrubbed throughout."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def __call__(self, value: Any) -> Any:
        return self.value(value)

    def encoded(self, text: str) -> tuple[str, str] | None:
        """Return ``(NAME, encoding)`` of a secret found in ``text`` encoded, or None.

        Encodings: ``verbatim`` (the value itself: the last-line scan runs over bytes,
        such as attachments, that no scrubbing touched), ``hex`` (either case),
        ``base64`` and ``base64url`` at every byte alignment (so inside a longer encoded
        value too), ``url-quoted``.
        """
        for name, value in self._ordered():
            for label, form in _encodings(value):
                if form and form in text:
                    return name, label
        return None


def _scrub_fragments(text: str, secret: str, mark: str) -> str:
    """Replace every maximal run of ``text`` that is a prefix or a suffix of ``secret``
    (``MIN_FRAGMENT`` characters or more): what a cut leaves of an echoed secret.

    A run of letters only is left alone: a secret's first or last letters are often a
    word (``sqlite``, ``postgr``) that evidence uses for other things, and a token's
    letters-only edge that short tells an attacker next to nothing.
    """
    size = MIN_FRAGMENT
    head, tail = secret[:size], secret[-size:]
    spans: list[tuple[int, int, str]] = []
    start = text.find(head)
    while start >= 0:
        end = start + size
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        spans.append((start, end, "prefix"))
        start = text.find(head, start + 1)
    end = text.find(tail)
    while end >= 0:
        stop = end + size
        begin = end
        while begin > 0 and stop - begin < len(secret) and text[begin - 1] == secret[len(secret) - (stop - begin) - 1]:
            begin -= 1
        spans.append((begin, stop, "suffix"))
        end = text.find(tail, end + 1)
    # A URL secret's scheme ("https://") is no secret: a prefix fragment must reach at
    # least MIN_FRAGMENT characters past it, or every other URL would be blanked.
    scheme = _SCHEME.match(secret)
    floor = scheme.end() + size if scheme else size
    spans = [
        (a, b, kind)
        for a, b, kind in spans
        if not text[a:b].isalpha() and (kind == "suffix" or b - a >= floor)
    ]
    if not spans:
        return text
    spans.sort()
    merged: list[list[int]] = []
    for a, b, _ in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, last = [], 0
    for a, b in merged:
        out.append(text[last:a])
        out.append(mark)
        last = b
    out.append(text[last:])
    return "".join(out)


def _encodings(value: str) -> list[tuple[str, str]]:
    raw = value.encode()
    forms = [("hex", raw.hex()), ("hex", raw.hex().upper())]
    if len(value) >= MIN_FRAGMENT:
        # (shorter values could be any number in a metric series)
        forms.insert(0, ("verbatim", value))
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        # Drop what depends on the bytes before (the padding) and after (the last
        # group): the rest appears in any base64 text that holds the secret there.
        start = (pad * 4 + 2) // 3
        core = encoded[start:].rstrip("=")[:-2]
        if len(core) >= MIN_FRAGMENT:
            forms.append(("base64", core))
            forms.append(("base64url", core.replace("+", "-").replace("/", "_")))
    for quoted in (quote(value, safe=""), quote_plus(value)):
        if quoted != value:
            forms.append(("url-quoted", quoted))
    return forms


__all__ = ["MIN_FRAGMENT", "MIN_SECRET", "Scrubber", "redaction"]
