"""External trust anchors (seal CA, tax CA), the tax CAs' CRLs, and tax-certificate binding."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the binding pages (the employer's, the officer's) and the CA administrator's
    trust-anchor page."""
    from ca_service.binding.account_views import account_bp, officer_bp
    from ca_service.binding.views import bp as trust_admin_bp

    app.register_blueprint(account_bp)
    app.register_blueprint(officer_bp)
    app.register_blueprint(trust_admin_bp)
