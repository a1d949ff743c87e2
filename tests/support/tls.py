"""A self-signed certificate for 127.0.0.1, made with the openssl command for a test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.needs import require


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write cert.pem and key.pem (valid for IP 127.0.0.1 and localhost) into ``directory``."""
    require(shutil.which("openssl"), "the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
