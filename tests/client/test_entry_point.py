"""The installed `ca-client` console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_console_script_runs() -> None:
    script = Path(sys.executable).parent / "ca-client"
    top = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert top.returncode == 0, top.stderr
    for command in ("keygen", "csr", "import-cert", "show"):
        assert command in top.stdout
    result = subprocess.run(
        [str(script), "keygen", "--help"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: ca-client keygen" in result.stdout
    assert "the CA ignores the CSR subject" in " ".join(result.stdout.split())
