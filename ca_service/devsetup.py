"""The embedded default under VAR_DIR: secret key, HSM PIN and a SoftHSM token.

Nothing here runs for a production deployment with a network HSM (CA_SOFTHSM=false and the
PIN and secret key supplied by the operator); it only fills in what is missing, so running it
again changes nothing.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ca_service.config import Settings
from ca_service.hsm_access import point_softhsm_at_var, softhsm_conf_path
from hsm import init_softhsm_token, softhsm_token_exists, write_softhsm_config


@dataclass(frozen=True)
class DevSetupResult:
    created: list[str]


def _write_secret(path: Path, value: str) -> bool:
    """Create a 0600 file with ``value`` unless it exists; True when created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return True


def ensure_local_setup(settings: Settings, environ: dict[str, str]) -> DevSetupResult:
    """Create the secret key, PIN files and SoftHSM token that are missing."""
    created: list[str] = []
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.var_dir, 0o700)
    if not settings["SECRET_KEY"] and _write_secret(
        settings.secret_key_file, secrets.token_urlsafe(48)
    ):
        created.append(f"secret key {settings.secret_key_file}")

    if not settings["SOFTHSM"]:
        return DevSetupResult(created)

    pin_from_env = environ.get(str(settings["PIN_ENV"]))
    if not pin_from_env and _write_secret(settings.pin_file, secrets.token_hex(16)):
        created.append(f"HSM user PIN {settings.pin_file}")
    so_pin_file = settings.softhsm_dir / "so-pin"
    if _write_secret(so_pin_file, secrets.token_hex(16)):
        created.append(f"HSM security officer PIN {so_pin_file}")

    conf = softhsm_conf_path(settings)
    if not conf.exists():
        write_softhsm_config(settings.softhsm_dir)
        created.append(f"SoftHSM configuration {conf}")
    point_softhsm_at_var(settings)
    label = str(settings["TOKEN_LABEL"])
    if not softhsm_token_exists(conf, label):
        user_pin = pin_from_env or settings.pin_file.read_text().strip()
        init_softhsm_token(conf, label, so_pin_file.read_text().strip(), user_pin)
        created.append(f"SoftHSM token {label!r}")
    return DevSetupResult(created)
