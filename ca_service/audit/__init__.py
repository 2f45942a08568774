"""Hash-chained audit log with HSM-signed checkpoints."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """The read-only viewer for auditors (`ca-service audit` verifies and signs)."""
    from ca_service.audit import views

    app.register_blueprint(views.bp)
