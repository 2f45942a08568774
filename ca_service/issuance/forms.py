"""Forms of the employer portal and the officer console (every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DateField, RadioField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # newer than types-WTForms
from wtforms.validators import DataRequired, Optional

from ca_service.form_validators import Length
from ca_service.issuance.models import DOCUMENT_TITLES, DocumentType, KeySource


class ActionForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    """A button: submit, approve, attest, retry (only the CSRF token)."""


class NewApplicationForm(FlaskForm):  # type: ignore[misc]
    key_source = RadioField(
        _l("Where is the key generated?"),
        choices=[
            SelectChoice(
                KeySource.CSR.value,
                _l("On our token or computer: I will upload a certificate request"),
            ),
            SelectChoice(KeySource.COUNTER.value, _l("At the agency's counter, on our token")),
        ],
        default=KeySource.CSR.value,
        validators=[DataRequired()],
    )


class DocumentForm(FlaskForm):  # type: ignore[misc]
    doc_type = SelectField(
        _l("Document"),
        choices=[SelectChoice(t.value, DOCUMENT_TITLES[t]) for t in DocumentType],
        validators=[DataRequired()],
    )
    file = FileField(_l("File (PDF, PNG or JPEG)"), validators=[FileRequired(_l("Choose a file."))])
    signature = FileField(_l("Detached signature (.p7s), if the seal is in a separate file"))


class RequestForm(FlaskForm):  # type: ignore[misc]
    file = FileField(_l("Certificate request file (PEM or DER)"))
    pem = TextAreaField(_l("…or paste the PEM text"), validators=[Optional(), Length(max=65536)])


class RejectForm(FlaskForm):  # type: ignore[misc]
    reason = TextAreaField(
        _l("Reason (the employer sees it)"),
        validators=[
            DataRequired(_l("Give the employer a reason for the rejection.")),
            Length(max=2000, message=_l("Keep the reason under 2,000 characters.")),
        ],
    )


class ApproveForm(FlaskForm):  # type: ignore[misc]
    """An approval (or a dual-control confirmation), with an optional note for the record."""

    note = TextAreaField(
        _l("Note for the record (optional; the employer sees it in the history)"),
        validators=[
            Optional(),
            Length(max=2000, message=_l("Keep the note under 2,000 characters.")),
        ],
    )


class ValidityForm(FlaskForm):  # type: ignore[misc]
    valid_until = DateField(_l("Valid until"), validators=[Optional()])


class RenewalForm(FlaskForm):  # type: ignore[misc]
    """A renewal: the new key's CSR, and what happens to the old certificate."""

    file = FileField(_l("Certificate request for the new key (PEM or DER)"))
    pem = TextAreaField(_l("…or paste the PEM text"), validators=[Optional(), Length(max=65536)])
    supersede = BooleanField(
        _l("Revoke the old certificate (as superseded) as soon as the new one is issued")
    )
    contacts_confirmed = BooleanField(
        _l("The administrator's mobile number and e-mail address shown above are current")
    )
