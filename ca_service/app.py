"""The application factory. Importing this module has no side effects."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from ca_service import config as config_module
from ca_service import db as db_module
from ca_service import hsm_access, i18n
from ca_service.errors import ConfigurationError
from ca_service.extensions import csrf, init_settings, settings_of
from ca_service.paths import templates_dir

# ``settings_of`` is re-exported for ca_service/binding/* and tests/binding/*, which belong to
# another change in flight (the binding import circle). Drop it once both have merged and those
# imports read ``from ca_service.extensions import settings_of``.
__all__ = ["create_app", "settings_of"]


def _secret_key(settings: config_module.Settings) -> str:
    if settings["SECRET_KEY"]:
        return str(settings["SECRET_KEY"])
    path = settings.secret_key_file
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigurationError(
            f"no secret key: set CA_SECRET_KEY or create {path} (`ca-service init` does)"
        ) from None
    if len(key) < 32:
        raise ConfigurationError(f"the secret key in {path} is too short (32 characters or more)")
    return key


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, ``CA_*`` environment and ``overrides``.

    :raises ConfigurationError: when a required setting is missing or wrong.
    """
    settings = config_module.load_settings(overrides=overrides)
    app = Flask(__name__, template_folder=str(templates_dir()), static_folder=None)
    init_settings(app, settings)
    logging.getLogger("ca_service").setLevel(str(settings["LOG_LEVEL"]).upper())

    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(settings["SESSION_COOKIE_SECURE"]),
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=bool(settings["SESSION_COOKIE_SECURE"]),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=int(settings["SESSION_HOURS"])),
        MAX_CONTENT_LENGTH=int(settings["MAX_UPLOAD_MB"]) * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        RATELIMIT_STORAGE_URI=str(settings["RATELIMIT_STORAGE_URI"]),
    )

    db_module.init_app(app, settings.database_url)
    hsm_access.init_app(app, settings)
    csrf.init_app(app)
    i18n.init_app(app)

    from ca_service import (
        api,
        audit,
        auth,
        authorities,
        binding,
        employers,
        errors_views,
        issuance,
        revocation,
        web,
    )

    errors_views.init_app(app)
    web.init_app(app)
    employers.init_app(app)  # before auth: its rate limits cover the registration page
    auth.init_app(app)
    audit.init_app(app)
    authorities.init_app(app)
    revocation.init_app(app)
    issuance.init_app(app)
    binding.init_app(app)
    api.init_app(app)
    return app
