"""A throw-away self-signed certificate for a test server's TLS listeners (R9.5: the direct-TLS
c2s port). Clients of the harness do not verify it: only the transport is under test."""

from __future__ import annotations

import asyncio
from pathlib import Path


async def self_signed(workdir: Path, name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) in PEM under ``workdir``, for ``name`` (CN and subjectAltName)."""
    cert, key = workdir / f"{name}.crt", workdir / f"{name}.key"
    proc = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", "-days", "2",
        "-keyout", str(key), "-out", str(cert),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"openssl could not make a test certificate: {out.decode(errors='replace')[-500:]}")
    key.chmod(0o600)
    return cert, key
