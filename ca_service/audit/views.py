"""The audit-log viewer for auditors and CA administrators: read-only, filtered, paged."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import current_user

from ca_service.audit import browse
from ca_service.auth.access import require_role
from ca_service.auth.models import User
from ca_service.db import read_first

bp = Blueprint("audit", __name__, url_prefix="/audit")


@bp.get("/")
@require_role(*browse.READERS)
def events() -> str:
    filters = browse.EventFilter.parse(request.args)
    user: User = current_user._get_current_object()
    with read_first():
        page = browse.search_events(user=user, filters=filters)
        actions = browse.action_names()
    return render_template(
        "audit/events.html",
        page=page,
        filters=filters,
        actions=actions,
        families=browse.action_families(actions),
    )
