"""Request-wide objects the factory sets up and every package reads: CSRF protection and the
app's resolved settings.

It imports no feature package, so the factory (``ca_service.app``), views, API handlers and
commands can all import it without an import circle.
"""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from ca_service.config import Settings

csrf = CSRFProtect()

# Where the app keeps its settings in ``app.extensions``.
SETTINGS_KEY = "ca_settings"


def init_settings(app: Flask, settings: Settings) -> None:
    """Attach the resolved settings to ``app`` (``settings_of`` reads them back)."""
    app.extensions[SETTINGS_KEY] = settings


def settings_of(app: Flask) -> Settings:
    """The resolved settings of an app."""
    settings: Settings = app.extensions[SETTINGS_KEY]
    return settings
