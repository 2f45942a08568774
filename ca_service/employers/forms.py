"""Registration form (Flask-WTF: CSRF token included). Field checks beyond presence and
length are the service's, with its own messages."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Optional

from ca_service.form_validators import Length


class RegistrationForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    registration_number = StringField(
        _l("Registration number (Unified Social Credit Code)"),
        validators=[DataRequired(), Length(max=40)],
    )
    legal_name = StringField(
        _l("Legal name of the company"), validators=[DataRequired(), Length(max=64)]
    )
    legal_representative_id = StringField(
        _l("Legal representative's ID number (optional)"), validators=[Optional(), Length(max=32)]
    )
    administrator_name = StringField(
        _l("Your name (the administrator)"), validators=[DataRequired(), Length(max=200)]
    )
    mobile = StringField(_l("Reserved mobile number"), validators=[DataRequired(), Length(max=24)])
    email = EmailField(_l("E-mail address"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(
        _l("Repeat the password"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
    )


class OperatorForm(FlaskForm):  # type: ignore[misc]
    full_name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(_l("E-mail address"), validators=[DataRequired(), Length(max=254)])
    mobile = StringField(
        _l("Mobile number (sign-in codes go here)"), validators=[DataRequired(), Length(max=24)]
    )


class RemoveOperatorForm(FlaskForm):  # type: ignore[misc]
    """Remove an operator (only the CSRF token)."""
