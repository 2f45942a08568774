"""Certificate login pages: the TLS client certificate the browser presented, or a signed
challenge answered from another program or device (``ca-client login``, a mobile signer).

The challenge page keeps one live challenge per browser (its id and a browser secret in the
signed session cookie) and reloads itself every few seconds without JavaScript; once a
signature for it has arrived, the reload signs this browser — and only this one — in.
"""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, session, url_for
from flask import request as flask_request
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.wrappers import Response

from ca_service.auth import views
from ca_service.auth.certificate_login import login_with_certificate
from ca_service.auth.challenges import digest, new_challenge
from ca_service.auth.client_cert import presented_chain
from ca_service.auth.forms import CancelForm
from ca_service.auth.models import ChallengePurpose, LoginChallenge, User
from ca_service.auth.verification import CertificateRefused
from ca_service.db import db, rows_changed, utcnow
from ca_service.extensions import settings_of
from ca_service.qr import qr_svg_data_uri

CHALLENGE = "certificate_challenge"  # session key: {"id", "secret", "nonce"}
RELOAD_SECONDS = 4
# An answered challenge signs its browser in only if the browser reloads within this long
# after the challenge's expiry (it reloads every RELOAD_SECONDS while the page is open).
PICKUP_GRACE = dt.timedelta(minutes=2)


def challenge_lifetime() -> int:
    return int(settings_of(current_app)["CHALLENGE_SECONDS"])


def _live_challenge() -> tuple[LoginChallenge, dict[str, str]] | None:
    """This browser's challenge row and session entry, while usable or just answered."""
    entry = session.get(CHALLENGE)
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
        return None
    row = db.session.get(LoginChallenge, entry["id"])
    if row is None or row.browser_hash != digest(str(entry.get("secret", ""))):
        return None
    now = utcnow()
    if row.picked_up_at is not None or (row.used_at is None and row.expires_at <= now):
        return None
    if row.expires_at + PICKUP_GRACE <= now:
        return None  # answered, but this browser did not come back for it in time
    return row, entry


def _pick_up(row: LoginChallenge) -> User | None:
    """The user a signature signed this browser in as, exactly once."""
    if row.result_user_id is None:
        return None
    claimed = rows_changed(
        sa.update(LoginChallenge)
        .where(LoginChallenge.id == row.id, LoginChallenge.picked_up_at.is_(None))
        .values(picked_up_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    user = db.session.get(User, row.result_user_id) if claimed == 1 else None
    return user if user is not None and not user.disabled else None


def _page(status: int = 200) -> tuple[str, int]:
    live = _live_challenge()
    if live is None:
        secret = secrets.token_urlsafe(24)
        challenge = new_challenge(
            purpose=ChallengePurpose.LOGIN,
            lifetime=dt.timedelta(seconds=challenge_lifetime()),
            now=utcnow(),
            browser_secret=secret,
        )
        session[CHALLENGE] = {"id": challenge.row_id, "secret": secret, "nonce": challenge.nonce}
        nonce, expires_at = challenge.nonce, challenge.expires_at
    else:
        row, entry = live
        nonce, expires_at = entry["nonce"], row.expires_at
    base = str(settings_of(current_app)["PUBLIC_BASE_URL"]).rstrip("/")
    answer_url = f"{base}/api/v1/auth/certificate?challenge={nonce}"
    page = render_template(
        "auth/certificate.html",
        nonce=nonce,
        expires_at=expires_at,
        base_url=base,
        qr=qr_svg_data_uri(answer_url),
        answer_url=answer_url,
        tls_form=CancelForm(),
        reload_seconds=RELOAD_SECONDS,
    )
    return page, status


@views.bp.get("/certificate")
def certificate_login() -> Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("auth.home"))
    live = _live_challenge()
    if live is not None:
        user = _pick_up(live[0])
        if user is not None:
            session.pop(CHALLENGE, None)
            return views._sign_in(
                user,
                method=str(live[0].result_method),
                certificate_id=live[0].result_certificate_id,
                certificate_not_after=live[0].result_certificate_not_after,
            )
    return _page()


@views.bp.post("/certificate/tls")
def certificate_tls() -> Response | tuple[str, int]:
    if not CancelForm().validate_on_submit():
        flash(_("The form expired. Try again."), "error")
        return _page(400)
    settings = settings_of(current_app)
    try:
        chain = presented_chain(flask_request.environ, settings)
        if not chain:
            flash(
                _(
                    "Your browser presented no client certificate. Open this site over https:// "
                    "with "
                    "your certificate installed (or your token plugged in), or sign the challenge "
                    "below with ca-client."
                ),
                "error",
            )
            return _page(400)
        login = login_with_certificate(chain, settings=settings, now=utcnow())
    except CertificateRefused as exc:
        flash(exc.message, "error")
        return _page(exc.status_code)
    session.pop(CHALLENGE, None)
    return views._sign_in(
        login.user,
        method=login.method,
        certificate_id=login.certificate_id,
        certificate_not_after=login.not_after,
    )
