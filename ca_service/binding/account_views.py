"""Tax-certificate bindings on the web: the employer administrator's page (bind by the TLS
client certificate of this connection or by a signed challenge, list, unbind) and the
officer's lookup by registration number (list, unbind). Thin views over ``binding.bindings``.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from ca_service.auth.access import require_role
from ca_service.auth.challenges import new_challenge
from ca_service.auth.client_cert import presented_chain
from ca_service.auth.forms import CancelForm
from ca_service.auth.models import ChallengePurpose, Role, User
from ca_service.auth.verification import CertificateRefused
from ca_service.binding import bindings
from ca_service.db import utcnow
from ca_service.employers.service import employer_of
from ca_service.errors import CAError, NotFound
from ca_service.extensions import settings_of
from ca_service.i18n import N_
from ca_service.qr import qr_svg_data_uri

account_bp = Blueprint("bindings", __name__, url_prefix="/account/bindings")
officer_bp = Blueprint("officer_bindings", __name__, url_prefix="/officer/bindings")

Page = Response | str | tuple[str, int]
FORM_EXPIRED = N_("The form expired; reload the page and try again.")  # gettext it where shown


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


def _has_tls_certificate() -> bool:
    """Whether this connection presented a client certificate. An unreadable one counts: the
    page still shows (binding it answers why it is refused), not an error page instead."""
    try:
        return bool(presented_chain(request.environ, settings_of(current_app)))
    except CertificateRefused:
        return True


def _account_page(status: int = 200) -> tuple[str, int]:
    user = _user()
    employer = employer_of(user)
    settings = settings_of(current_app)
    challenge = new_challenge(
        purpose=ChallengePurpose.BIND,
        lifetime=dt.timedelta(seconds=int(settings["CHALLENGE_SECONDS"])),
        now=utcnow(),
        user=user,
    )
    base = str(settings["PUBLIC_BASE_URL"]).rstrip("/")
    answer_url = f"{base}/api/v1/bindings?challenge={challenge.nonce}"
    page = render_template(
        "binding/account_bindings.html",
        employer=employer,
        rows=bindings.list_bindings(employer.id, include_unbound=True),
        has_tls_certificate=_has_tls_certificate(),
        challenge=challenge,
        base_url=base,
        answer_url=answer_url,
        qr=qr_svg_data_uri(answer_url),
        form=CancelForm(),
    )
    return page, status


@account_bp.get("/")
@require_role(Role.EMPLOYER_ADMIN)
def index() -> Page:
    return _account_page()


@account_bp.post("/tls")
@require_role(Role.EMPLOYER_ADMIN)
def bind_tls() -> Page:
    if not CancelForm().validate_on_submit():
        flash(_(FORM_EXPIRED), "error")
        return _account_page(400)
    settings = settings_of(current_app)
    try:
        try:
            chain = presented_chain(request.environ, settings)
        except CertificateRefused as exc:
            # Unreadable: refused, and on the record like the certificates binding refuses.
            raise bindings.refuse_unreadable_presented(user=_user(), refusal=exc) from None
        if not chain:
            flash(
                _(
                    "Your browser presented no client certificate on this connection. Open "
                    "this page over %(scheme)s with the tax certificate installed, or sign the "
                    "challenge with %(client)s.",
                    scheme="https://",
                    client="ca-client",
                ),
                "error",
            )
            return _account_page(400)
        binding = bindings.bind_presented(
            user=_user(), chain=chain, settings=settings, now=utcnow()
        )
    except CAError as exc:
        flash(exc.message, "error")
        return _account_page(exc.status_code)
    flash(
        _("The tax certificate %(subject)s is bound to your account.", subject=binding.subject),
        "success",
    )
    return redirect(url_for("bindings.index"))


@account_bp.post("/<int:binding_id>/unbind")
@require_role(Role.EMPLOYER_ADMIN)
def unbind(binding_id: int) -> Page:
    if not CancelForm().validate_on_submit():
        flash(_(FORM_EXPIRED), "error")
        return _account_page(400)
    try:
        binding = bindings.unbind(user=_user(), binding_id=binding_id, now=utcnow())
    except CAError as exc:
        flash(exc.message, "error")
        return _account_page(exc.status_code)
    flash(_("The tax certificate %(subject)s is unbound.", subject=binding.subject), "success")
    return redirect(url_for("bindings.index"))


@officer_bp.get("/")
@require_role(Role.RA_OFFICER, Role.CA_ADMIN)
def lookup() -> Page:
    number = request.args.get("number", "").strip()
    employer, rows, status = None, [], 200
    if number:
        try:
            employer = bindings.employer_by_number(number)
            rows = bindings.list_bindings(employer.id, include_unbound=True)
        except NotFound as exc:
            flash(exc.message, "error")
            status = exc.status_code
    page = render_template(
        "binding/officer_bindings.html",
        number=number,
        employer=employer,
        rows=rows,
        form=CancelForm(),
    )
    return page, status


@officer_bp.post("/<int:binding_id>/unbind")
@require_role(Role.RA_OFFICER, Role.CA_ADMIN)
def officer_unbind(binding_id: int) -> Page:
    number = request.form.get("number", "")
    if not CancelForm().validate_on_submit():
        flash(_(FORM_EXPIRED), "error")
    else:
        try:
            binding = bindings.unbind(user=_user(), binding_id=binding_id, now=utcnow())
            flash(
                _("The tax certificate %(subject)s is unbound.", subject=binding.subject), "success"
            )
        except CAError as exc:
            flash(exc.message, "error")
    return redirect(url_for("officer_bindings.lookup", number=number))
