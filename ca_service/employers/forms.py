"""Registration form (Flask-WTF: CSRF token included). Field checks beyond presence and
length are the service's, with its own messages."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Optional

from ca_service.form_validators import Length


class RegistrationForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    registration_number = StringField(
        "Registration number (Unified Social Credit Code)",
        validators=[DataRequired(), Length(max=40)],
    )
    legal_name = StringField(
        "Legal name of the company", validators=[DataRequired(), Length(max=64)]
    )
    legal_representative_id = StringField(
        "Legal representative's ID number (optional)", validators=[Optional(), Length(max=32)]
    )
    administrator_name = StringField(
        "Your name (the administrator)", validators=[DataRequired(), Length(max=200)]
    )
    mobile = StringField("Reserved mobile number", validators=[DataRequired(), Length(max=24)])
    email = EmailField("E-mail address", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(
        "Repeat the password",
        validators=[DataRequired(), EqualTo("password", message="The passwords differ.")],
    )
