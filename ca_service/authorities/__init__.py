"""The CA hierarchy (root, issuing CA, OCSP responder) and the public repository."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from ca_service.authorities.views import bp

    app.register_blueprint(bp)
