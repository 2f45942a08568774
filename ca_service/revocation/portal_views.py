"""Revocation from the web: the officer console (by serial, any reason) and the employer
portal (an application's certificate, after typing the password again). Thin views: parse the
form, call one service in ``revocation.portal``, redirect back with a flash message."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as WerkzeugResponse
from wtforms import DateTimeLocalField, PasswordField, SelectField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # newer than types-WTForms
from wtforms.validators import DataRequired, Optional

from ca_service.auth.access import require_role
from ca_service.auth.models import Role, User
from ca_service.auth.service import LoginPolicy
from ca_service.db import db, read_first, utcnow
from ca_service.errors import CAError, NotFound, ValidationError
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.i18n import N_
from ca_service.issuance.models import ApplicationStatus

# The forms are on the issuance pages (templates/revocation/_*.html are included there): an error
# re-renders that page with the context its own view gives it.
from ca_service.issuance.pages import employer_page, officer_page
from ca_service.issuance.service import employer_application
from ca_service.revocation import portal
from ca_service.revocation.service import StatusChange

bp = Blueprint("revocation_portal", __name__)

Page = WerkzeugResponse | str | tuple[str, int]
FORM_EXPIRED = N_("The form expired or is incomplete; reload the page and try again.")


class OfficerRevokeForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    # Choices are not checked here: the service names the accepted reasons in its message.
    reason = SelectField(
        _l("Reason"),
        choices=[SelectChoice(r, portal.REASON_LABELS[r]) for r in portal.OFFICER_REASONS],
        validate_choice=False,
        validators=[DataRequired()],
    )
    invalidity_date = DateTimeLocalField(
        _l("Key compromised since (UTC)"), format="%Y-%m-%dT%H:%M", validators=[Optional()]
    )


class EmployerRevokeForm(FlaskForm):  # type: ignore[misc]
    reason = SelectField(
        _l("Reason"),
        choices=[SelectChoice(r, portal.REASON_LABELS[r]) for r in portal.EMPLOYER_REASONS],
        validate_choice=False,
        validators=[DataRequired()],
    )
    password = PasswordField(_l("Your current password"), validators=[DataRequired()])


def _form_error(form: FlaskForm) -> ValidationError:
    """Why a posted form did not validate, in words the user can act on."""
    if "csrf_token" in form.errors:
        return ValidationError(_(FORM_EXPIRED))
    problems = [
        f"{getattr(form, name).label.text}: {' '.join(errors)}"
        for name, errors in form.errors.items()
    ]
    return ValidationError(" ".join(problems) or _(FORM_EXPIRED))


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


def _login_policy() -> LoginPolicy:
    # The sign-in page's lockout settings: a wrong password here counts as a failed sign-in.
    return LoginPolicy.from_settings(settings_of(current_app))


def _revoked_message(change: StatusChange) -> str:
    certificate = change.certificate
    facts = {"serial": certificate.serial, "reason": certificate.revocation_reason}
    if certificate.revoked_at is None:
        message = _("The hold on certificate %(serial)s is released; it is valid again.", **facts)
    elif change.crl is not None:
        message = _(
            "Certificate %(serial)s is revoked (%(reason)s); OCSP answers say so now. The "
            "employer is notified.",
            **facts,
        )
    else:
        message = _(
            "Certificate %(serial)s is revoked (%(reason)s); OCSP answers say so now. The CRL "
            "follows within seconds. The employer is notified.",
            **facts,
        )
    return str(message)


@bp.get("/officer/certificates/")
@require_role(*portal.REVOKING_ROLES)
def find_certificates() -> str:
    """Find a certificate to revoke by serial or employer, each with its revocation form."""
    search = request.args.get("q") or ""
    with read_first():
        found = portal.find_certificates(officer=_user(), search=search)
    return render_template(
        "revocation/certificates.html",
        search=search.strip(),
        found=found,
        limit=portal.FIND_LIMIT,
        action=OfficerRevokeForm(),
        now=utcnow(),
    )


@bp.post("/officer/certificates/<serial>/revoke")
@require_role(*portal.REVOKING_ROLES)
def officer_revoke(serial: str) -> Page:
    officer = _user()
    certificate = portal.employer_certificate(serial)
    application = portal.application_of(certificate)
    # CA administrators have no review page: they come back to the certificate search.
    show_review = (
        officer.role is Role.RA_OFFICER
        and application is not None
        and application.status is not ApplicationStatus.DRAFT
    )
    form = OfficerRevokeForm()
    try:
        if not form.validate_on_submit():
            raise _form_error(form)
        invalidity: dt.datetime | None = form.invalidity_date.data
        change = portal.revoke_by_officer(
            officer=officer,
            serial=certificate.serial,
            reason=form.reason.data or "",
            invalidity_date=invalidity.replace(tzinfo=dt.UTC) if invalidity else None,
            token=app_token(),
            settings=settings_of(current_app),
        )
    except CAError as exc:
        if not show_review or application is None or isinstance(exc, NotFound):
            raise  # the error page, with the status and message
        db.session.rollback()
        flash(exc.message, "error")
        return officer_page(application, exc.status_code)
    flash(_revoked_message(change), "success")
    if show_review and application is not None:
        return redirect(url_for("issuance_officer.review", application_id=application.id))
    return redirect(url_for("revocation_portal.find_certificates", q=certificate.serial))


@bp.post("/applications/<int:application_id>/revoke")
@require_role(Role.EMPLOYER_ADMIN)
def employer_revoke(application_id: int) -> Page:
    user = _user()
    application = employer_application(user=user, application_id=application_id)
    form = EmployerRevokeForm()
    try:
        if not form.validate_on_submit():
            raise _form_error(form)
        change = portal.revoke_own_certificate(
            user=user,
            application_id=application.id,
            reason=form.reason.data or "",
            password=form.password.data or "",
            policy=_login_policy(),
            token=app_token(),
            settings=settings_of(current_app),
        )
    except CAError as exc:
        if isinstance(exc, NotFound):
            raise
        # A wrong password was committed already (it counts towards lockout); this rolls
        # back only what the failed request itself did.
        db.session.rollback()
        flash(exc.message, "error")
        return employer_page(application, exc.status_code)
    flash(
        _(
            "Your certificate %(serial)s is revoked (%(revocation_reason)s). A confirmation "
            "is on its way by e-mail and SMS.",
            serial=change.certificate.serial,
            revocation_reason=change.certificate.revocation_reason,
        ),
        "success",
    )
    return redirect(url_for("issuance_employer.detail", application_id=application.id))
