"""Public PKI repository: the CA list and CA certificate downloads (no login needed)."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, render_template
from flask_babel import gettext as _

from ca_service.authorities.service import (
    current_certificate,
    get_authority,
    list_authorities,
    load_certificate,
)
from ca_service.web import stateless

bp = Blueprint("authorities", __name__, url_prefix="/pki")

_CACHE = "public, max-age=3600"


@bp.get("/")
def repository() -> str:
    rows = []
    for authority in list_authorities():
        row = current_certificate(authority)
        rows.append({"authority": authority, "row": row, "cert": load_certificate(row)})
    return render_template(
        "authorities/repository.html", rows=rows, title=_("Certificate authorities")
    )


def _certificate_response(slug: str, encoding: Encoding) -> Response:
    row = current_certificate(get_authority(slug))
    cert = load_certificate(row)
    if encoding is Encoding.DER:
        body, mimetype, suffix = cert.public_bytes(Encoding.DER), "application/pkix-cert", "crt"
    else:
        body, mimetype, suffix = cert.public_bytes(Encoding.PEM), "application/x-pem-file", "pem"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{slug}.{suffix}"'
    response.headers["Cache-Control"] = _CACHE
    response.set_etag(row.fingerprint_sha256 or "")
    return response


@bp.get("/ca/<slug>.crt")
@stateless
def certificate_der(slug: str) -> Response:
    return _certificate_response(slug, Encoding.DER)


@bp.get("/ca/<slug>.pem")
@stateless
def certificate_pem(slug: str) -> Response:
    return _certificate_response(slug, Encoding.PEM)
