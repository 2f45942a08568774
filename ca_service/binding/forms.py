"""Forms of the trust-anchor page for CA administrators (every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # newer than types-WTForms
from wtforms.validators import DataRequired, Optional

from ca_service.binding.models import RevocationPolicy, TrustPurpose
from ca_service.errors import ValidationError
from ca_service.form_validators import Length
from ca_service.i18n import N_

# A msgid: gettext it where it is shown.
FORM_EXPIRED = N_("The form expired or is incomplete; reload the page and try again.")
# TrustAnchor.crl_url; the service checks the scheme and says why a URL is refused.
_URL_LENGTH = 500

PURPOSE_LABELS = {
    TrustPurpose.TAX: _l("Tax bureau CA (employers bind its certificates and sign in with them)"),
    TrustPurpose.SEAL: _l("Seal CA (signs the seals on application documents)"),
}

POLICY_LABELS = {
    RevocationPolicy.WHEN_PUBLISHED: _l(
        "When published: a CA certificate is checked when it names a CRL distribution point "
        "or its issuer has a stored CRL or a CRL URL, and accepted otherwise"
    ),
    RevocationPolicy.REQUIRE: _l(
        "Require: every CA certificate on the path needs a current CRL from its issuer"
    ),
}


class ActionForm(FlaskForm):  # type: ignore[misc]  # flask-wtf ships no type information
    """A button: enable, disable, fetch the CRL now (only the CSRF token)."""


class AddAnchorForm(FlaskForm):  # type: ignore[misc]
    purpose = SelectField(
        _l("Purpose"),
        choices=[SelectChoice(p.value, PURPOSE_LABELS[p]) for p in TrustPurpose],
        default=TrustPurpose.TAX.value,
        validators=[DataRequired()],
    )
    certificate = FileField(
        _l("CA certificate (PEM or DER)"),
        validators=[FileRequired(_l("Choose the CA certificate file."))],
    )
    crl_url = StringField(
        _l("CRL URL: where this CA publishes the CRL it signs (tax CAs)"),
        validators=[Optional(), Length(max=_URL_LENGTH)],
    )


class CrlUrlForm(FlaskForm):  # type: ignore[misc]
    # Empty clears the URL: the CA's CRLs are then uploaded by hand.
    crl_url = StringField(_l("CRL URL"), validators=[Optional(), Length(max=_URL_LENGTH)])


class RevocationPolicyForm(FlaskForm):  # type: ignore[misc]
    revocation_policy = SelectField(
        _l("Revocation policy"),
        choices=[SelectChoice(p.value, POLICY_LABELS[p]) for p in RevocationPolicy],
        validators=[DataRequired()],
    )


class CrlUploadForm(FlaskForm):  # type: ignore[misc]
    crl = FileField(
        _l("CRL file (PEM or DER)"), validators=[FileRequired(_l("Choose the CRL file."))]
    )


def form_error(form: FlaskForm) -> ValidationError:
    """Why a posted form did not validate, in words the administrator can act on."""
    if "csrf_token" in form.errors:
        return ValidationError(_(FORM_EXPIRED))
    problems = [
        f"{getattr(form, name).label.text}: {' '.join(str(e) for e in errors)}"
        for name, errors in form.errors.items()
    ]
    return ValidationError(" ".join(problems) or _(FORM_EXPIRED))
