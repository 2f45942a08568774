"""What the audit package adds to an app: the auditors' read-only viewer (`ca-service audit`
verifies and signs)."""

from __future__ import annotations

from flask import Flask

from ca_service.audit.views import bp


def init_app(app: Flask) -> None:
    """Register the audit-log viewer."""
    app.register_blueprint(bp)
