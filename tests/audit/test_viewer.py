"""The audit-log viewer: auditors and CA administrators read the log with filters and pages;
nobody else does; bad filters are a clear 400."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.browse import PAGE_SIZE
from ca_service.audit.service import record_event
from ca_service.auth.models import Role
from ca_service.db import db
from tests.audit.conftest import EVENTS, SIGNED_AT
from tests.auth.conftest import make_officer  # noqa: F401  (fixture)
from tests.auth.flows import MakeOfficer, code_at, enter_code, login


def _signed_in(app: Flask, make_officer: MakeOfficer, role: Role) -> FlaskClient:  # noqa: F811
    staff = make_officer(role)
    client = app.test_client()
    login(client, staff.user.username, staff.password)
    assert enter_code(client, code_at(staff.seed)).status_code == 302
    return client


@pytest.fixture
def auditor(app: Flask, make_officer: MakeOfficer) -> FlaskClient:  # noqa: F811
    return _signed_in(app, make_officer, Role.AUDITOR)


def _targets(page: str) -> list[str]:
    return re.findall(r'<td class="mono">(t[^<]*)</td>', page)


def _page(client: FlaskClient, query: str = "") -> str:
    response = client.get(f"/audit/?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def test_newest_first_with_the_checkpoint_and_the_filters(
    chain: Flask, auditor: FlaskClient
) -> None:
    page = _page(auditor, "action=test.event")
    assert _targets(page)[:3] == [f"t{EVENTS}", f"t{EVENTS - 1}", f"t{EVENTS - 2}"]
    assert f"{EVENTS} matching event(s)" in page
    assert f"Newest signed checkpoint: event {SIGNED_AT}," in page
    assert _targets(_page(auditor, "action=test.")) == _targets(page)  # the family
    assert _targets(_page(auditor, "action=test.event&target=t1")) == ["t12", "t11", "t10", "t1"]
    assert _targets(_page(auditor, "action=nothing.like.this")) == []
    assert "No event matches these filters" in _page(auditor, "action=nothing.like.this")
    today = dt.datetime.now(dt.UTC).date()
    assert len(_targets(_page(auditor, f"action=test.event&since={today}&until={today}"))) == EVENTS
    tomorrow = today + dt.timedelta(days=1)
    assert _targets(_page(auditor, f"action=test.event&since={tomorrow}")) == []


def test_like_wildcards_are_literal(app: Flask, auditor: FlaskClient) -> None:
    with app.app_context():
        record_event("tests", "test.literal", "t100%", {})
        record_event("tests", "test.literal", "t100x", {})
        db.session.commit()
    assert _targets(_page(auditor, "action=test.literal&target=100%25")) == ["t100%"]
    assert _targets(_page(auditor, "action=test.literal&target=t_00")) == []


def test_pages_keep_the_filters(app: Flask, make_officer: MakeOfficer) -> None:  # noqa: F811
    with app.app_context():
        for n in range(PAGE_SIZE + 5):
            record_event("pager", "test.paged", f"t{n}", {})
        db.session.commit()
    admin = _signed_in(app, make_officer, Role.CA_ADMIN)
    first = _page(admin, "action=test.paged")
    assert len(_targets(first)) == PAGE_SIZE
    assert "Page 1 of 2" in first
    assert 'href="/audit/?action=test.paged&amp;page=2"' in first
    second = _page(admin, "action=test.paged&page=2")
    assert _targets(second) == ["t4", "t3", "t2", "t1", "t0"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=2026-13-01", "Dates are written YYYY-MM-DD"),
        ("until=yesterday", "Dates are written YYYY-MM-DD"),
        ("since=2026-02-02&until=2026-02-01", "The end date is before the start date."),
        ("page=0", "The page must be a whole number from 1"),
        ("page=" + "9" * 300, "The page must be a whole number from 1"),
        ("actor=" + "a" * 129, "The actor filter is too long"),
    ],
)
def test_bad_filters_are_a_clear_400(auditor: FlaskClient, query: str, message: str) -> None:
    response = auditor.get(f"/audit/?{query}")
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert message in body
    assert len(body) < 20_000  # nothing echoed at length


def test_only_auditors_and_ca_administrators_read_the_log(
    app: Flask,
    client: FlaskClient,
    make_officer: MakeOfficer,  # noqa: F811
) -> None:
    assert client.get("/audit/").status_code == 302  # to the sign-in page
    officer = _signed_in(app, make_officer, Role.RA_OFFICER)
    assert officer.get("/audit/").status_code == 403
