"""A throw-away certificate authority for TLS tests, made with the `openssl` command."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    server_keystore: Path  # key then certificate, ZooKeeper's PEM keystore layout
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of the above


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
    )
    return key, cert


def _signed(
    directory: Path, name: str, serial: int, ca_key: Path, ca_cert: Path, extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = (
        directory / f"{name}.key",
        directory / f"{name}.csr",
        directory / f"{name}.pem",
    )
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-set_serial",
        str(serial),
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return key, cert


def make_test_pki(directory: Path) -> Pki:
    """Create the files in `directory` (about a second: five RSA keys)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca(directory, "test-ca")
    server_key, server_cert = _signed(
        directory,
        "localhost",
        1,
        ca_key,
        ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    client_key, client_cert = _signed(
        directory, "job-engine", 2, ca_key, ca, "extendedKeyUsage=clientAuth\n"
    )
    keystore = directory / "server-keystore.pem"
    keystore.write_text(server_key.read_text() + server_cert.read_text())
    _, other_ca = _ca(directory, "other-ca")
    for path in directory.glob("*.key"):
        path.chmod(0o600)
    return Pki(
        ca=ca,
        server_cert=server_cert,
        server_key=server_key,
        server_keystore=keystore,
        client_cert=client_cert,
        client_key=client_key,
        other_ca=other_ca,
    )
