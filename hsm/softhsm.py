"""SoftHSM2 provisioning: a configuration file, a token directory, tokens by label.

This only prepares a token; the service then uses it like any other PKCS#11 token.
SoftHSM reads SOFTHSM2_CONF once, when the module is loaded, so callers set it in os.environ
before the first PKCS#11 call of the process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hsm.errors import HSMError

_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


def find_softhsm_module() -> str | None:
    """The SoftHSM2 module on this machine, if installed."""
    return next((p for p in _MODULE_CANDIDATES if Path(p).is_file()), None)


def write_softhsm_config(directory: Path) -> Path:
    """Write ``directory/softhsm2.conf`` with tokens in ``directory/tokens``; returns its path."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    os.chmod(tokens, 0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n"
    )
    return conf


def _softhsm_util(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        raise HSMError("softhsm2-util not found: install the softhsm2 package (make run does)")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    return subprocess.run(  # noqa: S603  (fixed tool, argument list, no shell)
        [tool, *args], capture_output=True, text=True, env=env, check=False, timeout=120
    )


def softhsm_token_exists(conf: Path, label: str) -> bool:
    """Whether an initialised token with this label exists under ``conf``."""
    proc = _softhsm_util(conf, "--show-slots")
    if proc.returncode != 0:
        raise HSMError(f"softhsm2-util --show-slots failed: {proc.stderr.strip()}")
    return any(
        line.split(":", 1)[1].strip() == label
        for line in proc.stdout.splitlines()
        if line.strip().startswith("Label:")
    )


def init_softhsm_token(conf: Path, label: str, so_pin: str, user_pin: str) -> None:
    """Create a token with this label unless it exists (PINs never appear in errors)."""
    if softhsm_token_exists(conf, label):
        return
    proc = _softhsm_util(
        conf, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin
    )
    if proc.returncode != 0:
        message = proc.stderr.replace(so_pin, "***").replace(user_pin, "***").strip()
        raise HSMError(f"could not create SoftHSM token {label!r}: {message}")
