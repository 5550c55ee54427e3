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
