"""Employer registration page."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from ca_service.app import settings_of
from ca_service.auth.views import advance_login
from ca_service.employers.forms import RegistrationForm
from ca_service.employers.service import CodePolicy, Registration, register_employer
from ca_service.errors import Conflict, ValidationError

bp = Blueprint("employers", __name__, url_prefix="/employers")


def code_policy() -> CodePolicy:
    return CodePolicy.from_settings(settings_of(current_app), str(current_app.config["SECRET_KEY"]))


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
        )
        try:
            _, user = register_employer(
                data,
                scheme=str(settings_of(current_app)["REGISTRATION_NUMBER_SCHEME"]),
                codes=code_policy(),
            )
        except (ValidationError, Conflict) as exc:
            flash(exc.message, "error")
            return render_template("employers/register.html", form=form), exc.status_code
        session.clear()
        flash("Your company is registered. Confirm your mobile number to continue.", "success")
        return advance_login(user)
    status = 400 if form.errors else 200
    return render_template("employers/register.html", form=form), status
