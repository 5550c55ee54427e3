"""The one error root of AFDP.

Every failure a user can cause or meet is an :class:`AfdpError`. Each subclass carries
the exit code of DESIGN.md's command-line contract, so the CLI has a single handler:

- 0 ok; 1 verification failed or policy violated; 2 usage error;
- 3 operational error (TSA or collector unreachable, repository locked, ...).

Third-party exceptions are wrapped where they cross into AFDP (``raise ... from``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_OPERATIONAL = 3

#: Unicode categories a terminal acts on or hides rather than shows: controls (C0, DEL
#: and C1: ESC sequences move the cursor and erase lines), format characters (bidi
#: overrides reorder a line, zero-width characters hide), surrogates, private use,
#: line/paragraph separators. :func:`visible` shows them as escapes; :func:`hidden_character`
#: (the rule for text that enters evidence) refuses them.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_INVISIBLE = HIDDEN_CATEGORIES
#: Format characters free text may hold: the zero-width (non-)joiners that emoji
#: sequences and Indic and Persian scripts need to read right. Bidi controls, zero-width
#: spaces and the rest of the format category are never free text.
_FREE_TEXT_FORMAT = frozenset({"\u200c", "\u200d"})


def hidden_character(text: str, *, free_text: bool = False) -> str | None:
    """Return the first character of ``text`` that would not show as itself, or None.

    The one rule for text that enters evidence (``afdp import``'s fields, a deployment's
    facts, an event's fields): names, ids, paths, people and versions may hold no
    character :func:`visible` would escape (C0, DEL, C1, bidi overrides and isolates,
    zero-width characters, surrogates, private use, line separators). ``free_text`` (a
    commit message, a release title) also allows the zero-width joiners of emoji and
    scripts that need them; every control and bidi character stays refused.
    """
    if text.isprintable():
        return None
    import unicodedata

    for char in text:
        if unicodedata.category(char) in HIDDEN_CATEGORIES and not (free_text and char in _FREE_TEXT_FORMAT):
            return char
    return None


def describe_character(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a refused character, named for an error line."""
    import unicodedata

    name = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab"}.get(char) or unicodedata.name(char, "")
    if not name:
        category = unicodedata.category(char)
        name = {"Cc": "a control character", "Cs": "a lone surrogate", "Co": "a private-use character"}.get(
            category, category
        )
    return f"U+{ord(char):04X} ({name})"


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on or hide written as an escape
    (``\\x1b``, ``\\u202e``), so a line shows exactly the characters it holds.

    Names, paths and messages printed for a human may come from evidence or a package
    someone else wrote: a tree entry named ``ESC[1A ESC[2K VERIFIED ...`` would otherwise
    erase a FAILED verdict on the auditor's screen and print its own. Printable text
    (the common case) is returned unchanged.
    """
    if text.isprintable():
        return text
    import unicodedata

    out = []
    for char in text:
        if unicodedata.category(char) in _INVISIBLE:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def visible_html(text: object) -> str:
    """``text`` for an HTML page: :func:`visible` on each line (line breaks kept, so a
    ``<pre>`` block still shows its lines), then HTML-escaped (quotes included).

    HTML escaping alone leaves a bidi override (U+202E) or a zero-width character in
    place: a browser, or a PDF made from the page, would then reorder or hide what an
    evidence string stands beside (a reason, a metric name, a signer). Every report and
    dashboard string taken from evidence goes through here.
    """
    import html

    return "\n".join(html.escape(visible(line)) for line in str(text).split("\n"))


class AfdpError(Exception):
    """Base of every AFDP error; ``exit_code`` is the process exit code for it."""

    exit_code: int = EXIT_OPERATIONAL

    def diagnostics(self) -> str:
        """Return one human line describing the failure (no traceback)."""
        return str(self)


class UsageError(AfdpError):
    """Bad arguments or bad input from the user (names, files that do not parse)."""

    exit_code = EXIT_USAGE


class ConfigurationError(UsageError):
    """A configuration file (trust policy, TSA folder, key) is missing or malformed."""


class SchemaError(AfdpError):
    """A document does not match its JSON Schema (or is not valid YAML/JSON)."""

    exit_code = EXIT_FAILED


class PolicyViolation(AfdpError):
    """A document is well-formed but an admission or trust policy forbids it."""

    exit_code = EXIT_FAILED


class SigningError(AfdpError):
    """A signer could not sign; never results in an unsigned record."""

    exit_code = EXIT_OPERATIONAL


class TimestampError(AfdpError):
    """No TSA produced a valid time-stamp token for a request."""

    exit_code = EXIT_OPERATIONAL


class StorageError(AfdpError):
    """The evidence repository could not be read or written (locked, corrupt, raced)."""

    exit_code = EXIT_OPERATIONAL


class NotFoundError(UsageError):
    """A service, deployment or branch that does not exist was named."""


class NetworkError(AfdpError):
    """A remote service (collector, TSA, webhook) was unreachable or answered garbage."""

    exit_code = EXIT_OPERATIONAL


class VerificationError(AfdpError):
    """Evidence failed verification; ``failures`` names record, check and reason."""

    exit_code = EXIT_FAILED
