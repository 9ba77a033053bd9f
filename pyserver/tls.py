"""TLS material for the HTTP and gRPC listeners: the server's certificate and
key, and optionally the CA that client certificates must chain to (mutual
TLS). Files are read and checked once, at start-up, so that a missing file,
a bad PEM block or a key that does not belong to the certificate stops the
server with one line that names the file, never at the first handshake.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"
# OpenSSL's reasons for a key that is not the certificate's: another key of
# the same type, or a key of another type.
_MISMATCH_REASONS = ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED")
_ENCRYPTED_MARKS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


class TlsConfigError(ValueError):
    """TLS files that cannot be used; the message is one line naming the
    flag, the file and the problem."""


@dataclass(frozen=True)
class TlsFiles:
    """Where a listener's TLS material comes from, and the flags that named
    it (for messages)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    cert_flag: str = "--tls-cert"
    key_flag: str = "--tls-key"
    client_ca_flag: str = "--tls-client-ca"


@dataclass(frozen=True)
class TlsMaterial:
    """Checked PEM bytes of one listener. ``client_ca_pem`` set means a
    client certificate signed by that CA is required."""

    files: TlsFiles
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None

    @property
    def mutual(self) -> bool:
        return self.client_ca_pem is not None

    def server_context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """A server-side SSLContext (TLS 1.2 at least) holding the
        certificate and key, requiring a client certificate when mutual.
        The files are read again: they were checked by ``load_tls``."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.files.cert, self.files.key, password=_no_password)
        if self.client_ca_pem is not None:
            context.load_verify_locations(cadata=self.client_ca_pem.decode("ascii", "replace"))
            context.verify_mode = ssl.CERT_REQUIRED
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context


def load_tls(files: TlsFiles) -> TlsMaterial:
    """Reads and checks ``files``. Raises TlsConfigError (one line naming
    the flag and file) for a file that cannot be read, holds no PEM block
    of the right kind or a malformed one, an encrypted key, or a key that
    does not match the certificate."""
    cert_pem = _read(files.cert_flag, files.cert)
    key_pem = _read(files.key_flag, files.key)
    _check_certificates(files.cert_flag, files.cert, cert_pem)
    if _KEY_MARK not in key_pem:
        raise TlsConfigError(f"{files.key_flag} '{files.key}': no PEM private key in the file")
    if any(mark in key_pem for mark in _ENCRYPTED_MARKS):
        raise TlsConfigError(f"{files.key_flag} '{files.key}': the private key is encrypted; "
                             f"give an unencrypted key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason in _MISMATCH_REASONS:
            raise TlsConfigError(f"{files.key_flag} '{files.key}': the private key does not "
                                 f"match the certificate in '{files.cert}'") from None
        raise TlsConfigError(f"{files.key_flag} '{files.key}': malformed PEM private key"
                             f"{_reason(exc)}") from None
    except (OSError, TypeError, ValueError) as exc:
        raise TlsConfigError(f"{files.key_flag} '{files.key}': not a usable PEM private key "
                             f"({exc})") from None
    client_ca_pem = None
    if files.client_ca is not None:
        client_ca_pem = _read(files.client_ca_flag, files.client_ca)
        _check_certificates(files.client_ca_flag, files.client_ca, client_ca_pem)
    return TlsMaterial(files, cert_pem, key_pem, client_ca_pem)


def _no_password() -> bytes:
    # load_cert_chain asks on the terminal for an encrypted key's password
    # unless given one; an encrypted key is refused instead.
    raise TlsConfigError("encrypted key")


def _read(flag: str, path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{flag} '{path}': cannot read the file: "
                             f"{exc.strerror or exc}") from None
    if not data.strip():
        raise TlsConfigError(f"{flag} '{path}': the file is empty")
    return data


def _check_certificates(flag: str, path: Path, pem: bytes) -> None:
    if _CERT_BEGIN not in pem:
        raise TlsConfigError(f"{flag} '{path}': no PEM certificate in the file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii"))
    except UnicodeDecodeError:
        raise TlsConfigError(f"{flag} '{path}': not a PEM file (binary content; a DER "
                             f"certificate must be converted to PEM)") from None
    except ssl.SSLError as exc:
        raise TlsConfigError(f"{flag} '{path}': malformed PEM certificate{_reason(exc)}"
                             ) from None


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason code in words, as ' (words)', or ''."""
    if not exc.reason or exc.reason in ("NO_START_LINE", "PEM_LIB"):
        return ""
    return f" ({exc.reason.replace('_', ' ').lower()})"
