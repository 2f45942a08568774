"""Employers: registration of a company and its administrator, mobile confirmation."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from ca_service.employers.views import bp

    app.register_blueprint(bp)
