"""What the employers package adds to an app: the registration and HR-operator blueprints.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from flask import Flask

from ca_service.employers.operator_views import bp as operators_bp
from ca_service.employers.views import bp


def init_app(app: Flask) -> None:
    """Register the registration and HR-operator blueprints."""
    app.register_blueprint(bp)
    app.register_blueprint(operators_bp)
