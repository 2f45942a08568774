"""Forms of the sign-in flow and the account page (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo

from ca_service.form_validators import Length

# An upper bound only, so nobody posts megabytes to the password hasher; the policy itself
# (length, not the username) is the service's check_password_policy, with its own messages.
_MAX_PASSWORD = 256


class LoginForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=_MAX_PASSWORD)])


class CodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField(_l("Six-digit code"), validators=[DataRequired(), Length(min=6, max=7)])


class SetPasswordForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField(
        _l("New password"), validators=[DataRequired(), Length(max=_MAX_PASSWORD)]
    )
    confirm = PasswordField(
        _l("Repeat the new password"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
    )


class ChangePasswordForm(SetPasswordForm):
    current = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=_MAX_PASSWORD)]
    )


class ResetRequestForm(FlaskForm):  # type: ignore[misc]
    username = StringField(
        _l("Username (your company's registration number)"),
        validators=[DataRequired(), Length(max=64)],
    )


class ResetPasswordForm(SetPasswordForm):
    code = StringField(_l("Six-digit code"), validators=[DataRequired(), Length(min=6, max=7)])


class CancelForm(FlaskForm):  # type: ignore[misc]
    """Sign out, or abandon a half-finished sign-in (only the CSRF token)."""
