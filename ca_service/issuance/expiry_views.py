"""Officer console: certificates expiring soon, and a chart of expiries per week (SVG)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, render_template, request
from flask_babel import gettext as _
from flask_login import current_user

from ca_service.auth.access import require_role
from ca_service.auth.models import User
from ca_service.db import read_first, utcnow
from ca_service.errors import ValidationError
from ca_service.issuance import expiry

officer_expiry_bp = Blueprint("expiry_officer", __name__, url_prefix="/officer/expiring")


@officer_expiry_bp.get("/")
@require_role(*expiry.OFFICER_ROLES)
def expiring() -> str:
    days = expiry.parse_horizon(request.args.get("days"))
    raw_page = request.args.get("page", "1").strip()
    if not raw_page.isdigit() or int(raw_page) < 1:
        raise ValidationError(_("The page must be a whole number from 1."))
    page = int(raw_page)
    officer: User = current_user._get_current_object()
    now = utcnow()
    with read_first():
        rows, total = expiry.expiring_certificates(officer=officer, days=days, page=page, now=now)
        weeks = expiry.weekly_expiries(officer=officer, now=now)
    return render_template(
        "issuance/expiring.html",
        rows=rows,
        total=total,
        days=days,
        page=page,
        pages=max(1, -(-total // expiry.PAGE_SIZE)),
        weeks=weeks,
        week_max=max([*weeks, 1]),
        now=now,
        timedelta=dt.timedelta,
    )
