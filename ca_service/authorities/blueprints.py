"""What the authorities package adds to an app: the public repository's blueprint.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from flask import Flask

from ca_service.authorities.views import bp


def init_app(app: Flask) -> None:
    """Register the public repository (CA certificates)."""
    app.register_blueprint(bp)
