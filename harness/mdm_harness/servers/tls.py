"""A throw-away self-signed certificate for a test server's TLS listeners (R9.5: the direct-TLS
c2s port). Clients of the harness do not verify it: only the transport is under test."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(workdir: Path, name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) in PEM under ``workdir``, for ``name`` (CN and subjectAltName)."""
    cert, key = workdir / f"{name}.crt", workdir / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key
