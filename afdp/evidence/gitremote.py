"""The ``git`` command AFDP talks to an evidence remote with: transport, TLS and credentials.

Every command runs with no password prompt, a closed stdin, a timeout and only the
transports in :data:`ALLOWED_PROTOCOLS`; over https, certificate verification stays on
(:func:`_transport`), and a password in a URL reaches git through a one-off credential
helper's environment, never its command line. Messages show URLs :func:`redact`-ed.
:mod:`afdp.evidence.remote` pushes and fetches evidence through this module.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from afdp.errors import NetworkError, UsageError
from afdp.evidence.store import EvidenceStore

#: Seconds one git command (ls-remote, fetch, push) may take.
GIT_TIMEOUT = 300.0
#: The only transports git may use for AFDP (``GIT_ALLOW_PROTOCOL``): whatever the URL
#: becomes after git's ``url.<base>.insteadOf`` rewriting or ``protocol.allow`` settings,
#: ``ext::``, ``fd::`` and other remote helpers (which run commands) are refused by git.
ALLOWED_PROTOCOLS = "file:git:ssh:http:https"


def redact(text: str) -> str:
    """Hide credentials in URLs (``https://user:token@host`` -> ``https://***@host``)."""
    # up to the last '@' before the host: a password may itself hold an '@'
    return re.sub(r"(\w+://)[^/\s]*@", r"\1***@", text)


def without_password(url: str) -> str:
    """Return ``url`` without a password (``https://user:token@host`` -> ``https://user@host``):
    the form kept in the push queue. Credentials then come from git's credential helpers."""
    return re.sub(r"^(\w+://[^/@:\s]*):[^/\s]*@", r"\1@", url)


def _git(
    args: Sequence[str], *, git_dir: Path | None = None, remote: str = "", env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    # No HTTPS password prompt (credential helpers still answer); stdin is closed, and a
    # remote that hangs is cut off after GIT_TIMEOUT.
    environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS}
    # git's curl traces (GIT_TRACE_CURL) keep Authorization headers out whatever the
    # user's environment says
    environment["GIT_TRACE_REDACT"] = "1"
    for name, value in (env or {}).items():  # None: removed from git's environment
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    command = ["git"]
    if git_dir is not None:
        command.append(f"--git-dir={git_dir}")
    try:
        return subprocess.run(
            [*command, *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env=environment,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise NetworkError("the git command is not installed: AFDP pushes and fetches evidence with it") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"git {args[0]} {redact(remote)} took more than {GIT_TIMEOUT:g} s") from exc
    except OSError as exc:
        raise NetworkError(f"git {args[0]} failed: {redact(str(exc))}") from exc


#: The credential helper AFDP gives git for a URL that carries a password: the password
#: reaches git through the environment (readable by this user only), never through its
#: command line, which every user of the machine can read (``ps``, /proc/PID/cmdline).
_PASSWORD_VARIABLE = "AFDP_GIT_PASSWORD"
_PASSWORD_HELPER = f'!f() {{ test "$1" = get && printf "password=%s\\n" "${_PASSWORD_VARIABLE}"; }}; f'


def _transport(url: str, git_dir: Path | None) -> tuple[list[str], str, dict[str, str | None]]:
    """Return (git options, URL, environment) for a git command that talks to ``url``.

    1. TLS certificate verification stays on: ``GIT_SSL_NO_VERIFY`` is dropped, and
       ``http.sslVerify=true`` is given, as is ``true`` for every URL-specific
       ``http.<url>.sslVerify`` in the user's configuration (command-line settings are
       read last, so they win whatever URL git ends up at after ``insteadOf`` or
       ``pushInsteadOf`` rewriting). Where the user turned it off for this https URL
       (``GIT_SSL_NO_VERIFY``, ``http.<url>.sslVerify false``), the command is refused
       by name rather than quietly changed. The server's CA is trusted the standard
       way: ``GIT_SSL_CAINFO`` or ``http.sslCAInfo``.
    2. A password in an http(s) URL moves out of the command line into the environment
       of a one-off credential helper (the user's helpers are not asked, and do not
       store it); the username stays in the URL.

    Raises:
        ConfigurationError: certificate verification is turned off for ``url``.
        UsageError: a malformed http(s) URL (:func:`_http_parts`).
    """
    options = ["-c", "http.sslVerify=true"]
    found = _git(["config", "--name-only", "--get-regexp", r"^http\..+\.sslverify$"], git_dir=git_dir, remote=url)
    for key in sorted(set(found.stdout.splitlines())) if found.returncode == 0 else []:
        if "=" in key:  # `-c name=value` splits at the first '=': this name cannot be given
            from afdp.errors import ConfigurationError

            raise ConfigurationError(f"git config {key!r}: AFDP cannot keep certificate verification on with this setting; remove it")
        options += ["-c", f"{key}=true"]
    environment: dict[str, str | None] = {"GIT_SSL_NO_VERIFY": None}  # set at all, even empty, it turns verification off
    parts = _http_parts(url)
    if parts is not None and parts.password is not None:
        password = unquote(parts.password)
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        url = urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))
        options += ["-c", "credential.helper=", "-c", f"credential.helper={_PASSWORD_HELPER}"]
        environment[_PASSWORD_VARIABLE] = password
    if parts is not None and parts.scheme.lower() == "https":
        _require_tls_verification(url, git_dir)
    return options, url, environment


def _require_tls_verification(url: str, git_dir: Path | None) -> None:
    from afdp.errors import ConfigurationError

    advice = "AFDP does not send or fetch evidence without it: trust the server's CA with GIT_SSL_CAINFO or http.sslCAInfo instead"
    if "GIT_SSL_NO_VERIFY" in os.environ:
        raise ConfigurationError(f"TLS certificate verification is turned off (GIT_SSL_NO_VERIFY is set) for {redact(url)}; {advice}")
    # the value git would use for this URL: URL-specific settings win over http.sslVerify
    found = _git(["-c", "http.sslVerify=true", "config", "--type=bool", "--get-urlmatch", "http.sslVerify", url], git_dir=git_dir, remote=url)
    if found.returncode == 0 and found.stdout.strip() == "false":
        raise ConfigurationError(f"TLS certificate verification is turned off for {redact(url)} (git config http.<url>.sslVerify false); {advice}")


def _git_remote(
    command: Sequence[str], url: str, rest: Sequence[str] = (), *, git_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``git <command> -- <url> <rest>`` against a remote (see :func:`_transport`)."""
    options, address, environment = _transport(url, git_dir)
    process = _git([*options, *command, "--", address, *rest], git_dir=git_dir, remote=url, env=environment)
    return process


def _last_line(process: subprocess.CompletedProcess[str]) -> str:
    """git's reason: its first ``fatal:``/``error:`` line (the lines after it are advice
    such as "...and the repository exists."), else its last line."""
    lines = [line for line in (process.stderr or process.stdout or "").splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    chosen = reasons[0] if reasons else lines[-1] if lines else None
    return redact(" ".join(chosen.split()))[:300] if chosen else f"git exited with {process.returncode}"


def _reason(process: subprocess.CompletedProcess[str]) -> str:
    """git's reason (:func:`_last_line`) and, for a certificate or credentials problem,
    what to do about it."""
    reason = _last_line(process)
    lowered = reason.lower()
    if "certificate" in lowered:  # curl/OpenSSL and GnuTLS both name it
        reason += " (trust the server's CA with GIT_SSL_CAINFO=ca.pem or git config http.sslCAInfo; AFDP never turns certificate verification off)"
    elif "could not read username" in lowered or "could not read password" in lowered:
        reason += " (the remote asks for credentials: configure a git credential helper, or give them in the URL)"
    return reason


def check_remote_url(url: str) -> str:
    """Return ``url`` if it names a Git remote AFDP may use, else raise.

    Raises:
        UsageError: empty, starts with ``-`` (would read as an option), or uses a
            ``ext::``/``fd::`` transport (runs commands).
    """
    if not url or url.startswith("-") or "\n" in url:
        raise UsageError(f"--remote {redact(url)!r} is not a Git remote URL or path")
    if re.match(r"^(ext|fd)::", url):
        raise UsageError(f"--remote {redact(url)!r}: the {url.split('::')[0]}:: transport is not allowed")
    _http_parts(url)
    return url


def _http_parts(url: str) -> SplitResult | None:
    """The parts of an http(s) URL (None for other remotes).

    Raises:
        UsageError: a malformed URL, or a password that holds a line break or NUL (it
            would add lines to git's credential protocol).
    """
    if not re.match(r"^https?://", url, re.IGNORECASE):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsed lazily: a bad port raises here)
    except ValueError as exc:  # an unclosed '[', a port that is not a number
        raise UsageError(f"--remote {redact(url)!r} is not a valid URL: {exc}") from exc
    if parts.password is not None and re.search(r"[\r\n\0]", unquote(parts.password)):
        raise UsageError(f"--remote {redact(url)!r}: the password holds a line break or NUL")
    return parts


def list_remote(url: str) -> dict[str, str]:
    """Return ``{ref: object id}`` of every branch the remote advertises.

    Raises:
        NetworkError: the remote cannot be reached or read.
    """
    listed = _git_remote(["ls-remote", "--heads"], url)
    if listed.returncode != 0:
        raise NetworkError(f"cannot read evidence remote {redact(url)}: {_reason(listed)}")
    found = {}
    for line in listed.stdout.splitlines():
        oid, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/") and re.fullmatch(r"[0-9a-f]{40}", oid):
            found[ref] = oid
    return found


def _fetch_objects(store: EvidenceStore, url: str, refs: Iterable[str]) -> None:
    """Fetch the commits ``refs`` point at on the remote, without writing any ref."""
    wanted = sorted(set(refs))
    if not wanted:
        return
    fetched = _git_remote(
        ["fetch", "--no-tags", "--no-write-fetch-head", "--no-auto-gc", "--quiet"], url, wanted, git_dir=store.path
    )
    if fetched.returncode != 0:
        raise NetworkError(f"cannot fetch from evidence remote {redact(url)}: {_reason(fetched)}")
