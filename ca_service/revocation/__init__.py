"""Revocation, CRL publication (and, next, the OCSP responder)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from ca_service.revocation.views import bp

    app.register_blueprint(bp)
