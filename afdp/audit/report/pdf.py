"""The PDF report: the HTML report printed by headless Chromium, then PAdES-signed.

Why Chromium: the PDF must show exactly what the HTML shows, and Chromium renders the
same file an auditor opens in a browser (inline SVG and CSS included), offline, and is
installed as a Debian package (``chromium``) with no Python build dependencies. WeasyPrint
would be a second renderer with its own CSS support and native libraries (Pango), so
the two formats could drift. Chromium runs with a throw-away profile, no network
(every host resolves to nothing) and a timeout.

Signing: pyHanko writes a PAdES B-T signature (``ETSI.CAdES.detached``) with an RFC3161
signature time-stamp from the same TSAs as the evidence (first that answers wins), so a
PDF reader shows who issued the report, when, and that it was not altered since. The
signer is a PEM private key with its certificate; given no certificate, a self-signed
one naming the key's AFDP keyid is made, so the auditor pins that certificate.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afdp.errors import EXIT_OPERATIONAL, AfdpError, ConfigurationError, TimestampError

CHROMIUM_ENV = "AFDP_CHROMIUM"
PASSPHRASE_ENV = "AFDP_KEY_PASSPHRASE"
PRINT_TIMEOUT = 90.0
SIGNATURE_FIELD = "AFDP-Report-Signature"


@dataclass(frozen=True)
class PdfSigning:
    """Who signs a PDF report (PAdES) and which TSAs time-stamp the signature."""

    key: Path
    certificate: Path | None
    tsa_urls: tuple[str, ...]
    chain: tuple[Path, ...] = ()


class RenderError(AfdpError):
    """Chromium could not print the report."""

    exit_code = EXIT_OPERATIONAL


def chromium_binary() -> str:
    """Return the Chromium executable (``$AFDP_CHROMIUM``, else chromium on PATH).

    Raises:
        ConfigurationError: none is installed.
    """
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigurationError(
        f"PDF reports are printed by headless Chromium: install 'chromium' or set ${CHROMIUM_ENV}"
    )


def chromium_args(profile: Path) -> list[str]:
    """The flags every headless run uses: no sandbox (root in containers), no network."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
    ]


def print_pdf(html: str) -> bytes:
    """Return ``html`` printed to PDF (A4, no browser header or footer).

    Raises:
        ConfigurationError: no Chromium.
        RenderError: Chromium failed or timed out.
    """
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="afdp-pdf-") as folder:
        work = Path(folder)
        source, target = work / "report.html", work / "report.pdf"
        source.write_text(html, encoding="utf-8")
        command = [
            binary,
            *chromium_args(work / "profile"),
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            source.as_uri(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=PRINT_TIMEOUT, check=False, cwd=work
            )
        except subprocess.TimeoutExpired as exc:
            raise RenderError(
                f"Chromium did not print the PDF within {PRINT_TIMEOUT:.0f} s"
            ) from exc
        except OSError as exc:
            raise ConfigurationError(
                f"cannot run Chromium {binary}: {exc.strerror or exc}"
            ) from exc
        if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RenderError(
                f"Chromium could not print the PDF (exit {done.returncode}): {tail[0][:300]}"
            )
        return target.read_bytes()


#: A PEM key or certificate chain is a few KiB; a larger file (or /dev/zero) is refused
#: before it is all read.
MAX_PEM_BYTES = 1 << 20


def _read_pem(path: Path, what: str) -> bytes:
    from afdp.evidence.files import read_at_most

    return read_at_most(path, MAX_PEM_BYTES, what)


def _load_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    pem = _read_pem(path, "signing key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        return serialization.load_pem_private_key(
            pem, password=passphrase.encode() if passphrase else None
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"signing key {path} does not load (a PEM private key; set ${PASSPHRASE_ENV} if encrypted): {exc}"
        ) from exc


def self_signed_certificate(key: Any) -> bytes:
    """Return a PEM certificate for ``key`` naming its AFDP keyid (valid 5 years)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from afdp.evidence.signing import public_key_from_pem

    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keyid = public_key_from_pem(public_pem).keyid
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"AFDP report signer {keyid[:16]}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AFDP"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=5 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _signer(signing: PdfSigning) -> Any:
    from asn1crypto import keys as asn1_keys
    from asn1crypto import pem as asn1_pem
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    key = _load_key(signing.key)
    if signing.certificate is None:
        chain_pem = self_signed_certificate(key)
    else:
        chain_pem = _read_pem(signing.certificate, "signing certificate")
    certificates = [
        asn1_x509.Certificate.load(der) for _, _, der in asn1_pem.unarmor(chain_pem, multiple=True)
    ]
    if not certificates:
        raise ConfigurationError(f"{signing.certificate} holds no PEM certificate")
    leaf = certificates[0]
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf.public_key.dump() != public_der:
        raise ConfigurationError(
            f"signing certificate {signing.certificate} is not for the key {signing.key}"
        )
    private_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return signers.SimpleSigner(
        signing_cert=leaf,
        signing_key=asn1_keys.PrivateKeyInfo.load(private_der),
        cert_registry=SimpleCertificateStore.from_certs(certificates[1:]),
    )


def _timestamper(urls: tuple[str, ...]) -> Any:
    """A pyHanko time-stamper that asks AFDP's TSAs in order (the first that answers wins)."""
    import httpx
    from asn1crypto import tsp
    from pyhanko.sign.timestamps.api import TimeStamper

    from afdp.deadline import deadline, with_deadlines

    class FailoverTimeStamper(TimeStamper):
        async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
            problems = []
            for url in urls:
                try:
                    with with_deadlines(httpx.Client()) as http, deadline(10.0):
                        response = http.post(
                            url,
                            content=req.dump(),
                            headers={"Content-Type": "application/timestamp-query"},
                            timeout=10.0,
                        )
                    if response.status_code != 200:
                        problems.append(f"{url}: HTTP {response.status_code}")
                        continue
                    answer = tsp.TimeStampResp.load(response.content)
                    if answer["status"]["status"].native not in ("granted", "granted_with_mods"):
                        problems.append(f"{url}: {answer['status']['status'].native}")
                        continue
                    return answer
                except (httpx.HTTPError, ValueError) as exc:
                    problems.append(f"{url}: {exc}")
            raise TimestampError("no TSA time-stamped the report signature: " + "; ".join(problems))

    return FailoverTimeStamper()


def sign_pdf(pdf: bytes, signing: PdfSigning, *, reason: str) -> bytes:
    """Return ``pdf`` with a PAdES B-T signature (signature time-stamp from ``signing.tsa_urls``).

    Raises:
        ConfigurationError: the key or certificate does not load or do not match.
        TimestampError: no TSA answered.
        RenderError: pyHanko could not sign the document.
    """
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.general import SigningError as HankoSigningError
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError

    if not signing.tsa_urls:
        raise ConfigurationError("a signed PDF report needs at least one --tsa URL")
    signer = _signer(signing)
    metadata = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason[:200],
        location="AFDP compliance report",
        name=signer.signing_cert.subject.human_friendly,
    )
    output = io.BytesIO()
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
        signers.sign_pdf(
            writer,
            metadata,
            signer=signer,
            timestamper=_timestamper(signing.tsa_urls),
            output=output,
        )
    except TimestampError:
        raise
    except TimestampRequestError as exc:
        raise TimestampError(f"time-stamping the report signature failed: {exc}") from exc
    except (HankoSigningError, ValueError, OSError) as exc:
        raise RenderError(f"could not sign the PDF report: {exc}") from exc
    return output.getvalue()
