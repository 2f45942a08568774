"""Employer portal: the certificates of the employer and their renewal. Views are thin: parse
the form, call one service (ca_service.issuance.renewal)."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from ca_service.auth.access import require_role
from ca_service.auth.models import EMPLOYER_MEMBERS, User
from ca_service.db import db
from ca_service.employers.service import employer_of
from ca_service.errors import CAError
from ca_service.extensions import settings_of
from ca_service.issuance import renewal, renewal_batch
from ca_service.issuance.documents import read_upload
from ca_service.issuance.forms import RenewalForm

bp = Blueprint("renewal", __name__, url_prefix="/renewal")

Page = WerkzeugResponse | str | tuple[str, int]


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


@bp.get("/")
@require_role(*EMPLOYER_MEMBERS)
def index() -> Page:
    settings = settings_of(current_app)
    windows = [
        renewal.renewal_window(certificate, settings)
        for certificate in renewal.employer_certificates(_user())
    ]
    return render_template("issuance/certificates.html", windows=windows)


def _page(serial: str, form: RenewalForm, status: int = 200) -> tuple[str, int]:
    user = _user()
    certificate = renewal.employer_certificate(user=user, serial=serial)
    window = renewal.renewal_window(certificate, settings_of(current_app))
    return (
        render_template(
            "issuance/renewal.html",
            window=window,
            employer=employer_of(user),
            form=form,
        ),
        status,
    )


@bp.get("/<serial>")
@require_role(*EMPLOYER_MEMBERS)
def renew_page(serial: str) -> Page:
    return _page(serial, RenewalForm())


@bp.post("/<serial>")
@require_role(*EMPLOYER_MEMBERS)
def renew(serial: str) -> Page:
    user = _user()
    form = RenewalForm()
    if not form.validate_on_submit():
        flash(_("The form expired or is incomplete; reload the page and try again."), "error")
        return _page(serial, form, 400)
    data = read_upload(form.file.data) if form.file.data else (form.pem.data or "").encode()
    certificate = renewal.employer_certificate(user=user, serial=serial)
    try:
        outcome = renewal_batch.renew(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            user=user,
            certificate=certificate,
            csr=data,
            supersede=bool(form.supersede.data),
            contacts_confirmed=bool(form.contacts_confirmed.data),
        )
    except CAError as exc:
        if exc.status_code >= 500:
            raise
        db.session.rollback()
        flash(exc.message, "error")
        return _page(serial, form, exc.status_code)
    if outcome.certificate is not None:
        flash(
            _(
                "Renewed: certificate %(serial)s is valid until %(date)s. Download it below.",
                serial=outcome.certificate.serial,
                date=f"{outcome.certificate.not_after:%Y-%m-%d}",
            ),
            "success",
        )
    else:
        flash(
            _(
                "Your renewal needs attention before it can be issued: %(reasons)s.",
                reasons="; ".join(outcome.reasons),
            ),
            "error",
        )
    return redirect(url_for("issuance_employer.detail", application_id=outcome.application.id))
