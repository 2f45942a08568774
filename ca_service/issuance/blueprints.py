"""What the issuance package adds to an app: the portal's, the officer console's and the
public blueprints.

Its own module rather than the package's ``__init__``, so that importing any module of the
package does not import its views (tests/test_import_graph.py)."""

from __future__ import annotations

from flask import Flask

from ca_service.issuance.expiry_views import officer_expiry_bp
from ca_service.issuance.notes import event_note
from ca_service.issuance.renewal_views import bp as renewal_bp
from ca_service.issuance.seals import quiet_pyhanko_verdicts
from ca_service.issuance.views import employer_bp, officer_bp, public_bp


def init_app(app: Flask) -> None:
    """Register the issuance blueprints; log pyHanko's seal verdicts on one line."""
    quiet_pyhanko_verdicts()
    app.jinja_env.globals["history_note"] = event_note

    app.register_blueprint(employer_bp)
    app.register_blueprint(officer_bp)
    app.register_blueprint(public_bp)
    app.register_blueprint(officer_expiry_bp)
    app.register_blueprint(renewal_bp)
