"""What the binding package adds to an app: the employer's and the officer's binding pages and
the CA administrator's trust-anchor page (its own module, so that importing the package does not
import its views; tests/test_import_graph.py)."""

from __future__ import annotations

from flask import Flask

from ca_service.binding.account_views import account_bp, officer_bp
from ca_service.binding.views import bp as trust_admin_bp


def init_app(app: Flask) -> None:
    """Register the binding and trust-anchor blueprints."""
    app.register_blueprint(account_bp)
    app.register_blueprint(officer_bp)
    app.register_blueprint(trust_admin_bp)
