"""CRLs served from storage: the web process never signs to answer."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ca_service.db import utcnow
from ca_service.revocation.service import latest_crl

bp = Blueprint("revocation", __name__)


@bp.get("/pki/crl/<slug>.crl")
def crl(slug: str) -> Response:
    row = latest_crl(slug)
    response = Response(row.der, mimetype="application/pkix-crl")
    response.headers["Content-Disposition"] = f'inline; filename="{slug}.crl"'
    response.set_etag(f"{slug}-{row.number}")
    response.last_modified = row.this_update
    remaining = max(0, int((row.next_update - utcnow()).total_seconds()))
    response.cache_control.public = True
    response.cache_control.max_age = remaining
    response.expires = row.next_update
    response.make_conditional(request)
    return response
