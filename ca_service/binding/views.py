"""The trust-anchor page of CA administrators (``/admin/trust``): the anchors with their CRLs;
add, enable and disable anchors; set where a tax CA publishes its CRL and the revocation policy
of a tax anchor; upload or fetch a CRL.

Thin views: check the role, parse the form, call one service (which checks the role again),
then redirect back with a flash message; a refusal re-renders the page with its status.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response as WerkzeugResponse

from ca_service.auth.access import require_role
from ca_service.auth.models import Role, User
from ca_service.binding import service, tax_crls
from ca_service.binding.forms import (
    FORM_EXPIRED,
    ActionForm,
    AddAnchorForm,
    CrlUploadForm,
    CrlUrlForm,
    RevocationPolicyForm,
    form_error,
)
from ca_service.binding.models import RevocationPolicy, TaxCrl, TrustPurpose
from ca_service.db import db, utcnow
from ca_service.errors import CAError, ValidationError
from ca_service.extensions import settings_of
from ca_service.i18n import format_utc_datetime

bp = Blueprint("trust_admin", __name__, url_prefix="/admin/trust")

Page = WerkzeugResponse | str | tuple[str, int]
# CA certificates are a few kilobytes; CRL uploads are bounded by MAX_UPLOAD_MB as well.
_MAX_CERTIFICATE_BYTES = 1024 * 1024


def _user() -> User:
    user: User = current_user._get_current_object()
    return user


def _read(upload: FileStorage | None, limit: int, what: str) -> bytes:
    """An uploaded file's bytes, reading at most one byte beyond the limit. ``what``: the
    file's name in the messages (translated).

    :raises ValidationError: when it is empty or larger than ``limit``.
    """
    data = upload.stream.read(limit + 1) if upload is not None else b""
    if not data:
        raise ValidationError(_("The %(what)s file is empty.", what=what))
    if len(data) > limit:
        raise ValidationError(
            _(
                "The %(what)s file is larger than %(size)s MB.",
                what=what,
                size=limit // (1024 * 1024),
            )
        )
    return data


def trust_page(status: int = 200, add_form: AddAnchorForm | None = None) -> tuple[str, int]:
    """The page as it stands in the database now."""
    return (
        render_template(
            "binding/trust.html",
            states=tax_crls.crl_states(now=utcnow()),
            add_form=add_form or AddAnchorForm(),
            tax=TrustPurpose.TAX,
            policy_form=RevocationPolicyForm(),
        ),
        status,
    )


def _refused(exc: CAError, add_form: AddAnchorForm | None = None) -> tuple[str, int]:
    db.session.rollback()  # nothing of the refused action is kept
    flash(exc.message, "error")
    return trust_page(exc.status_code, add_form)


def _crl_summary(crl: TaxCrl) -> str:
    times = {
        "this_update": format_utc_datetime(crl.this_update),
        "next_update": format_utc_datetime(crl.next_update),
    }
    if crl.crl_number:
        summary: str = _(
            "number %(number)s, thisUpdate %(this_update)s UTC, nextUpdate %(next_update)s UTC",
            number=int(crl.crl_number, 16),
            **times,
        )
    else:
        summary = _("thisUpdate %(this_update)s UTC, nextUpdate %(next_update)s UTC", **times)
    if utcnow() > crl.next_update:
        summary += ". " + _("It is already out of date: tax-certificate sign-in stays refused")
    return summary


@bp.get("/")
@require_role(Role.CA_ADMIN)
def index() -> Page:
    return trust_page()


@bp.post("/add")
@require_role(Role.CA_ADMIN)
def add() -> Page:
    form = AddAnchorForm()
    try:
        if not form.validate_on_submit():
            raise form_error(form)
        anchor = service.add_trust_anchor(
            actor=_user(),
            purpose=TrustPurpose(form.purpose.data),
            data=_read(form.certificate.data, _MAX_CERTIFICATE_BYTES, _("certificate")),
            crl_url=form.crl_url.data or None,
        )
    except CAError as exc:
        return _refused(exc, form)
    message: str = _(
        "%(subject)s is now a %(purpose)s trust anchor.",
        subject=anchor.subject,
        purpose=anchor.purpose.value,
    )
    if anchor.purpose is TrustPurpose.TAX and not anchor.crl_url:
        message += " " + _(
            "Set its CRL URL or upload its CRL: until then its certificates are refused."
        )
    flash(message, "success")
    return redirect(url_for(".index"))


def _set_enabled(anchor_id: int, enabled: bool) -> Page:
    try:
        if not ActionForm().validate_on_submit():
            raise ValidationError(_(FORM_EXPIRED))
        anchor = service.set_anchor_enabled(actor=_user(), anchor_id=anchor_id, enabled=enabled)
    except CAError as exc:
        return _refused(exc)
    if enabled:
        flash(_("%(subject)s is enabled.", subject=anchor.subject), "success")
    else:
        flash(_("%(subject)s is disabled.", subject=anchor.subject), "success")
    return redirect(url_for(".index"))


@bp.post("/<int:anchor_id>/enable")
@require_role(Role.CA_ADMIN)
def enable(anchor_id: int) -> Page:
    return _set_enabled(anchor_id, True)


@bp.post("/<int:anchor_id>/disable")
@require_role(Role.CA_ADMIN)
def disable(anchor_id: int) -> Page:
    return _set_enabled(anchor_id, False)


@bp.post("/<int:anchor_id>/crl-url")
@require_role(Role.CA_ADMIN)
def crl_url(anchor_id: int) -> Page:
    form = CrlUrlForm()
    try:
        if not form.validate_on_submit():
            raise form_error(form)
        anchor = service.set_crl_url(
            actor=_user(), anchor_id=anchor_id, url=(form.crl_url.data or "").strip() or None
        )
    except CAError as exc:
        return _refused(exc)
    if anchor.crl_url:
        flash(
            _(
                "%(subject)s publishes its CRL at %(url)s.",
                subject=anchor.subject,
                url=anchor.crl_url,
            ),
            "success",
        )
    else:
        flash(
            _("%(subject)s has no CRL URL now; upload its CRLs here.", subject=anchor.subject),
            "success",
        )
    return redirect(url_for(".index"))


@bp.post("/<int:anchor_id>/revocation-policy")
@require_role(Role.CA_ADMIN)
def revocation_policy(anchor_id: int) -> Page:
    form = RevocationPolicyForm()
    try:
        if not form.validate_on_submit():
            raise form_error(form)
        anchor = service.set_revocation_policy(
            actor=_user(),
            anchor_id=anchor_id,
            policy=RevocationPolicy(form.revocation_policy.data),
        )
    except CAError as exc:
        return _refused(exc)
    flash(
        _(
            "The revocation policy of %(subject)s is %(policy)s.",
            subject=anchor.subject,
            policy=anchor.revocation_policy.value,
        ),
        "success",
    )
    return redirect(url_for(".index"))


@bp.post("/<int:anchor_id>/crl")
@require_role(Role.CA_ADMIN)
def upload_crl(anchor_id: int) -> Page:
    form = CrlUploadForm()
    try:
        if not form.validate_on_submit():
            raise form_error(form)
        crl = tax_crls.upload_crl(
            actor=_user(),
            anchor_id=anchor_id,
            data=_read(form.crl.data, tax_crls.MAX_CRL_BYTES, _("CRL")),
            now=utcnow(),
        )
    except CAError as exc:
        return _refused(exc)
    flash(_("The CRL is stored: %(summary)s.", summary=_crl_summary(crl)), "success")
    return redirect(url_for(".index"))


@bp.post("/<int:anchor_id>/crl/fetch")
@require_role(Role.CA_ADMIN)
def fetch_crl(anchor_id: int) -> Page:
    try:
        if not ActionForm().validate_on_submit():
            raise ValidationError(_(FORM_EXPIRED))
        crl = tax_crls.fetch_anchor_crl(
            actor=_user(), anchor_id=anchor_id, settings=settings_of(current_app), now=utcnow()
        )
    except tax_crls.CrlFetchFailed as exc:
        # The failed attempt, noted on the stored CRL (last_error), is what the page and
        # `trust list` show; keep it although this response reports an error, whose status
        # would otherwise roll it back. Nothing else was changed.
        db.session.commit()
        flash(exc.message, "error")
        return trust_page(exc.status_code)
    except CAError as exc:
        return _refused(exc)
    flash(
        _(
            "Fetched the CRL from %(source)s: %(summary)s.",
            source=crl.source,
            summary=_crl_summary(crl),
        ),
        "success",
    )
    return redirect(url_for(".index"))
