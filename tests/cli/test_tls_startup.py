"""TLS files that cannot be used stop the server at start-up: exit status
1, one error line naming the flag, the file and the problem, no traceback,
before any model loads."""

from __future__ import annotations

import shutil
import socket
import threading

import pytest

from conftest import ServerProcess
from pyserver.tls import TlsConfigError, TlsFiles, load_tls
from tls_helpers import HOSTNAME, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    return tmp_path_factory.mktemp("empty_store")


# (flags built from the certificates, what the one error line must say)
CASES = {
    "missing cert": (lambda c: [f"--tls-cert={c.folder / 'absent.crt'}",
                                f"--tls-key={c.server_key}"],
                     ["--tls-cert", "absent.crt", "no such file"]),
    "key of another certificate": (lambda c: [f"--tls-cert={c.server_cert}",
                                              f"--tls-key={c.client_key}"],
                                   ["--tls-key", "client.key", "does not match", "server.crt"]),
    "unrelated key": (lambda c: [f"--tls-cert={c.server_cert}", f"--tls-key={c.other_key}"],
                      ["--tls-key", "other.key", "does not match"]),
    "truncated cert": (lambda c: [f"--tls-cert={c.truncated_cert}",
                                  f"--tls-key={c.server_key}"],
                       ["--tls-cert", "truncated.crt", "malformed pem certificate"]),
    "garbled key": (lambda c: [f"--tls-cert={c.server_cert}", f"--tls-key={c.garbled_key}"],
                    ["--tls-key", "garbled.key", "malformed pem private key"]),
    "cert not pem": (lambda c: [f"--tls-cert={c.not_pem}", f"--tls-key={c.server_key}"],
                     ["--tls-cert", "not-pem.txt", "no pem certificate"]),
    "key is a certificate": (lambda c: [f"--tls-cert={c.server_cert}",
                                        f"--tls-key={c.server_cert}"],
                             ["--tls-key", "server.crt", "no pem private key"]),
    "client ca missing": (lambda c: [f"--tls-cert={c.server_cert}", f"--tls-key={c.server_key}",
                                     f"--tls-client-ca={c.folder / 'none.crt'}"],
                          ["--tls-client-ca", "none.crt", "no such file"]),
    "client ca not pem": (lambda c: [f"--tls-cert={c.server_cert}", f"--tls-key={c.server_key}",
                                     f"--tls-client-ca={c.not_pem}"],
                          ["--tls-client-ca", "not-pem.txt", "no pem certificate"]),
    "cert without key": (lambda c: [f"--tls-cert={c.server_cert}"], ["--tls-cert", "--tls-key"]),
    "grpc-use-ssl without files": (lambda c: ["--grpc-use-ssl"],
                                   ["--grpc-use-ssl", "--grpc-server-cert"]),
    "grpc mutual without root": (lambda c: ["--grpc-use-ssl-mutual",
                                            f"--grpc-server-cert={c.server_cert}",
                                            f"--grpc-server-key={c.server_key}"],
                                 ["--grpc-use-ssl-mutual", "--grpc-root-cert"]),
    "grpc key mismatch": (lambda c: ["--grpc-use-ssl", f"--grpc-server-cert={c.server_cert}",
                                     f"--grpc-server-key={c.other_key}"],
                          ["--grpc-server-key", "other.key", "does not match"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unusable_tls_files_stop_the_start_with_one_line(case, certs, empty_store,
                                                          tmp_path_factory):
    flags, fragments = CASES[case]
    srv = ServerProcess(empty_store, *flags(certs), wait=False,
                        workdir=tmp_path_factory.mktemp("server"))
    code = srv.wait(30)
    log = srv.log_text()
    assert code == 1, log
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " E " in line]
    assert len(errors) == 1, log
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]
    assert "Started HTTPService" not in log, log


@pytest.mark.parametrize("generator", ["openssl", "cryptography"])
def test_test_certificates_from_either_generator_pass_the_checks_and_handshake(generator,
                                                                               tmp_path):
    if generator == "openssl" and shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    if generator == "cryptography":
        pytest.importorskip("cryptography")
    certs = make_certificates(tmp_path, generator)
    material = load_tls(TlsFiles(certs.server_cert, certs.server_key, certs.ca_cert))
    with pytest.raises(TlsConfigError):
        load_tls(TlsFiles(certs.server_cert, certs.other_key))
    server_side, client_side = socket.socketpair()
    answer = []

    def serve():
        with material.server_context().wrap_socket(server_side, server_side=True) as tls:
            answer.append(tls.getpeercert()["subject"])
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    context = certs.client_context(with_client_cert=True)
    with context.wrap_socket(client_side, server_hostname=HOSTNAME) as tls:
        assert tls.recv(2) == b"ok"
    thread.join(10)
    assert answer == [((("commonName", "test client"),),)]
