"""Independent checkers used by tests: the openssl command line and pkilint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

BIN = Path(sys.executable).parent


def write_pem(path: Path, certificates: Sequence[x509.Certificate]) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def openssl_verify(
    tmp: Path,
    leaf: x509.Certificate,
    *,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run `openssl verify` (strict X.509 checks) and return the completed process."""
    args = [
        "openssl",
        "verify",
        "-x509_strict",
        "-CAfile",
        str(write_pem(tmp / "roots.pem", roots)),
    ]
    if intermediates:
        args += ["-untrusted", str(write_pem(tmp / "untrusted.pem", intermediates))]
    args += [*extra, str(write_pem(tmp / "leaf.pem", [leaf]))]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)


def pkilint_findings(
    linter: str, der: bytes, tmp: Path, severity: str = "WARNING", extra: Sequence[str] = ()
) -> list[str]:
    """Findings at or above ``severity`` from a pkilint command (lint_pkix_cert, lint_crl, ...)."""
    path = tmp / f"{linter}.der"
    path.write_bytes(der)
    proc = subprocess.run(
        [
            str(BIN / linter),
            "lint",
            *extra,
            "-s",
            severity,
            "-f",
            "JSON",
            "--document-format",
            "DER",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise AssertionError(f"{linter} failed to run: {proc.stderr or proc.stdout}")
    report = json.loads(proc.stdout)
    findings = []
    for result in report.get("results", []):
        for message in result.get("finding_descriptions", []):
            severity, code = message.get("severity"), message.get("code")
            where, text = result.get("node_path"), message.get("message")
            findings.append(f"{severity} {code} @ {where}: {text}")
    return findings


def errors_only(findings: Sequence[str]) -> list[str]:
    return [f for f in findings if f.startswith(("ERROR", "FATAL"))]
