"""The app's handle on the HSM: one ``hsm.Token`` per process and token, shared by apps.

python-pkcs11 loads a module once per process and PKCS#11 login state is per process, so two
app instances in one process (tests, the CLI) must share a Token rather than log in twice.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from flask import Flask, current_app

from ca_service.config import Settings
from ca_service.errors import ConfigurationError
from hsm import HSMConfig, Token, find_softhsm_module
from hsm.errors import HSMError

_tokens: dict[tuple[str, str], Token] = {}
_lock = threading.Lock()


def softhsm_conf_path(settings: Settings) -> Path:
    return settings.softhsm_dir / "softhsm2.conf"


def hsm_config(settings: Settings, environ: dict[str, str] | None = None) -> HSMConfig:
    """Resolve module, token and PIN from settings.

    :raises ConfigurationError: when the module or PIN cannot be found.
    """
    env = dict(os.environ) if environ is None else environ
    module = str(settings["PKCS11_MODULE"]) or find_softhsm_module()
    if not module:
        raise ConfigurationError(
            "no PKCS#11 module: install softhsm2 (make run does) or set CA_PKCS11_MODULE"
        )
    if not Path(module).is_file():
        raise ConfigurationError(f"CA_PKCS11_MODULE={module} does not exist")
    try:
        return HSMConfig.from_sources(
            module_path=module,
            token_label=str(settings["TOKEN_LABEL"]),
            pin_env=str(settings["PIN_ENV"]) or None,
            pin_file=str(settings.pin_file),
            environ=env,
            pool_size=int(settings["HSM_POOL_SIZE"]),
        )
    except HSMError as exc:
        raise ConfigurationError(
            f"{exc} (run `ca-service init` to create the development PIN)"
        ) from None


def point_softhsm_at_var(settings: Settings) -> None:
    """Make SoftHSM (when we manage it) read the token directory under VAR_DIR.

    SoftHSM reads SOFTHSM2_CONF once, when the module is loaded, so this must happen before the
    first PKCS#11 call in the process.
    """
    if not settings["SOFTHSM"]:
        return
    wanted = str(softhsm_conf_path(settings))
    current = os.environ.get("SOFTHSM2_CONF")
    if current and Path(current).resolve() != Path(wanted).resolve():
        raise ConfigurationError(
            f"SOFTHSM2_CONF={current} but CA_VAR_DIR's token is configured at {wanted}: "
            "unset SOFTHSM2_CONF or set CA_SOFTHSM=false"
        )
    os.environ["SOFTHSM2_CONF"] = wanted


def token_for(config: HSMConfig) -> Token:
    """The process-wide Token for this module and token label."""
    key = (config.module_path, config.token_label)
    with _lock:
        token = _tokens.get(key)
        if token is None:
            token = _tokens[key] = Token(config)
        return token


def init_app(app: Flask, settings: Settings) -> None:
    point_softhsm_at_var(settings)
    app.extensions["hsm_token"] = token_for(hsm_config(settings))


def check_login(app: Flask) -> None:
    """Log in to the app's token once and log out again, before a server forks its workers.

    A wrong PIN then stops `ca-service serve` with one clear error instead of each worker
    answering 503 and offering the PIN again on every request, which would lock the token.

    :raises hsm.errors.HSMError: when the token is missing or refuses the PIN.
    """
    token = app_token(app)
    token.check_login()
    # The workers log in themselves after the fork; the master keeps no session.
    token.close()


def app_token(app: Flask | None = None) -> Token:
    """The HSM token of the given (or current) app."""
    token: Token = (app or current_app).extensions["hsm_token"]
    return token
