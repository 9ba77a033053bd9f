"""Certificates made at test time for the TLS tests: a CA, a server
certificate for 127.0.0.1 / localhost signed by it, a client certificate
signed by it, a client certificate from another CA, and broken files.
Made with the ``openssl`` command where it is installed, else with the
``cryptography`` package (the test extra)."""

from __future__ import annotations

import datetime
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOSTNAME = "localhost"


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files in one folder."""

    folder: Path

    def __getattr__(self, name: str) -> Path:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.folder / _FILES[name]

    def client_context(self, with_client_cert: bool = False,
                       foreign_client_cert: bool = False) -> ssl.SSLContext:
        """A client SSLContext trusting our CA (and so the server's
        certificate), with our client certificate or another CA's."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if with_client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        elif foreign_client_cert:
            context.load_cert_chain(self.foreign_client_cert, self.foreign_client_key)
        return context


_FILES = {
    "ca_cert": "ca.crt", "ca_key": "ca.key",
    "server_cert": "server.crt", "server_key": "server.key",
    "client_cert": "client.crt", "client_key": "client.key",
    "foreign_ca_cert": "foreign-ca.crt", "foreign_ca_key": "foreign-ca.key",
    "foreign_client_cert": "foreign-client.crt", "foreign_client_key": "foreign-client.key",
    "other_key": "other.key",               # a valid key that is not the server's
    "truncated_cert": "truncated.crt",      # a certificate block cut in the middle
    "garbled_key": "garbled.key",           # a key block whose base64 is damaged
    "not_pem": "not-pem.txt",
}


def make_certificates(folder: Path, generator: str | None = None) -> Certificates:
    """Writes every file of ``Certificates`` into ``folder``. ``generator``:
    'openssl', 'cryptography' or None (openssl when installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    if generator is None:
        generator = "openssl" if shutil.which("openssl") else "cryptography"
    certs = Certificates(folder)
    if generator == "openssl":
        _with_openssl(certs)
    else:
        _with_cryptography(certs)
    text = certs.server_cert.read_text()
    certs.truncated_cert.write_text(text[:len(text) // 2] + "\n-----END CERTIFICATE-----\n")
    lines = certs.server_key.read_text().splitlines()
    lines[2] = "!!!!" + lines[2][4:]
    certs.garbled_key.write_text("\n".join(lines) + "\n")
    certs.not_pem.write_text("this is not a PEM file\n")
    return certs


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _with_openssl(c: Certificates) -> None:
    days = "2"
    for ca, key, name in ((c.ca_cert, c.ca_key, "pyserver test CA"),
                          (c.foreign_ca_cert, c.foreign_ca_key, "another CA")):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(key), "-out", str(ca), "-days", days,
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaves = ((c.server_cert, c.server_key, c.ca_cert, c.ca_key, HOSTNAME,
               f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
              (c.client_cert, c.client_key, c.ca_cert, c.ca_key, "test client",
               "extendedKeyUsage=clientAuth\n"),
              (c.foreign_client_cert, c.foreign_client_key, c.foreign_ca_cert,
               c.foreign_ca_key, "foreign client", "extendedKeyUsage=clientAuth\n"))
    for cert, key, ca, ca_key, name, extensions in leaves:
        request = cert.with_suffix(".csr")
        ext_file = cert.with_suffix(".ext")
        ext_file.write_text(extensions)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-out", str(cert), "-days", days,
                 "-extfile", str(ext_file))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(c.other_key))


def _with_cryptography(c: Certificates) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def write_key(path: Path):
        key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return key

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def sign(path: Path, subject: str, key, issuer: str, issuer_key, extensions) -> None:
        builder = (x509.CertificateBuilder().subject_name(name(subject))
                   .issuer_name(name(issuer)).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(issuer_key, hashes.SHA256())
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_constraints = [(x509.BasicConstraints(ca=True, path_length=None), True),
                      (x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), True)]
    cas = {}
    for cert, key_path, subject in ((c.ca_cert, c.ca_key, "pyserver test CA"),
                                    (c.foreign_ca_cert, c.foreign_ca_key, "another CA")):
        key = write_key(key_path)
        sign(cert, subject, key, subject, key, ca_constraints)
        cas[cert] = (subject, key)
    server_san = x509.SubjectAlternativeName([x509.DNSName(HOSTNAME),
                                              x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaves = ((c.server_cert, c.server_key, c.ca_cert, HOSTNAME,
               [(server_san, False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]),
              (c.client_cert, c.client_key, c.ca_cert, "test client",
               [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]),
              (c.foreign_client_cert, c.foreign_client_key, c.foreign_ca_cert, "foreign client",
               [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]))
    for cert, key_path, ca, subject, extensions in leaves:
        issuer, issuer_key = cas[ca]
        sign(cert, subject, write_key(key_path), issuer, issuer_key, extensions)
    write_key(c.other_key)
