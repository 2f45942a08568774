"""The application factory. Importing this module has no side effects."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from ca_service.config import load_settings
from ca_service.db import init_app as init_db
from ca_service.extensions import csrf, init_settings
from ca_service.hsm_access import init_app as init_hsm
from ca_service.i18n import init_app as init_i18n
from ca_service.paths import PACKAGE_DIR, templates_dir


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, ``CA_*`` environment and ``overrides``.

    :raises ConfigurationError: when a required setting is missing or wrong.
    """
    settings = load_settings(overrides=overrides)
    app = Flask(
        __name__, template_folder=str(templates_dir()), static_folder=str(PACKAGE_DIR / "static")
    )
    init_settings(app, settings)
    logging.getLogger("ca_service").setLevel(str(settings["LOG_LEVEL"]).upper())

    app.config.update(
        SECRET_KEY=settings.secret_key(),
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

    init_db(app, settings.database_url)
    init_hsm(app, settings)
    csrf.init_app(app)
    init_i18n(app)

    # The feature packages, imported when an app is built: importing this module stays cheap
    # and free of side effects. Each imports ``ca_service.extensions``, never this module.
    from ca_service.api.blueprints import init_app as init_api
    from ca_service.audit.blueprints import init_app as init_audit
    from ca_service.auth.blueprints import init_app as init_auth
    from ca_service.authorities.blueprints import init_app as init_authorities
    from ca_service.binding.blueprints import init_app as init_binding
    from ca_service.employers.blueprints import init_app as init_employers
    from ca_service.errors_views import init_app as init_errors
    from ca_service.issuance.blueprints import init_app as init_issuance
    from ca_service.revocation.blueprints import init_app as init_revocation
    from ca_service.web import init_app as init_web

    init_errors(app)
    init_web(app)
    init_employers(app)  # before auth: its rate limits cover the registration page
    init_auth(app)
    init_audit(app)
    init_authorities(app)
    init_revocation(app)
    init_issuance(app)
    init_binding(app)
    init_api(app)
    return app
