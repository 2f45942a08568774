"""Applications with sealed documents, officer review, issuance and delivery."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from ca_service.issuance.expiry_views import officer_expiry_bp
    from ca_service.issuance.renewal_views import bp as renewal_bp
    from ca_service.issuance.seals import quiet_pyhanko_verdicts
    from ca_service.issuance.views import employer_bp, officer_bp, public_bp

    quiet_pyhanko_verdicts()

    app.register_blueprint(employer_bp)
    app.register_blueprint(officer_bp)
    app.register_blueprint(public_bp)
    app.register_blueprint(officer_expiry_bp)
    app.register_blueprint(renewal_bp)
