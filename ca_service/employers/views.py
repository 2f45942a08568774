"""Employer registration page."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from ca_service.auth.code_context import client_address, code_policy
from ca_service.auth.code_limits import wait_text
from ca_service.auth.views import advance_login
from ca_service.employers.forms import RegistrationForm
from ca_service.employers.service import Registration, register_employer
from ca_service.errors import Conflict, ValidationError
from ca_service.extensions import settings_of
from ca_service.i18n import current_language

bp = Blueprint("employers", __name__, url_prefix="/employers")


@bp.route("/register", methods=["GET", "POST"])
def register() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("issuance_employer.index"))
    form = RegistrationForm()
    if form.validate_on_submit():
        data = Registration(
            registration_number=form.registration_number.data or "",
            legal_name=form.legal_name.data or "",
            administrator_name=form.administrator_name.data or "",
            mobile=form.mobile.data or "",
            email=form.email.data or "",
            password=form.password.data or "",
            legal_representative_id=form.legal_representative_id.data or "",
            language=current_language(),
        )
        try:
            _employer, user, sent = register_employer(
                data,
                scheme=str(settings_of(current_app)["REGISTRATION_NUMBER_SCHEME"]),
                codes=code_policy(),
                client_address=client_address(),
            )
        except (ValidationError, Conflict) as exc:
            flash(exc.message, "error")
            return render_template("employers/register.html", form=form), exc.status_code
        session.clear()
        flash(_("Your company is registered. Confirm your mobile number to continue."), "success")
        if not sent.allowed:
            message = _(
                "No code was sent to your mobile number yet: too many codes were asked for it "
                "in a short time. Ask for one on the next page in %(wait)s.",
                wait=wait_text(sent.retry_after),
            )
            flash(str(message), "error")
        return advance_login(user)
    status = 400 if form.errors else 200
    return render_template("employers/register.html", form=form), status
