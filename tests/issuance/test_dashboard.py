"""The employer administrator's dashboard: each certificate with its status and days left, a
banner inside the renewal window and the grace period, applications with their progress, and
only the employer's own records."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db, utcnow
from ca_service.issuance.models import Application, ApplicationStatus, KeySource
from tests.auth.flows import MakeOfficer
from tests.issuance.conftest import (
    Issued,
    MakeEmployer,
    employer_login,
    issue_employer_certificate,
)

HOME = "/auth/home"


@pytest.fixture
def issued(app: Flask, make_employer: MakeEmployer, make_officer: MakeOfficer) -> Issued:
    return issue_employer_certificate(app, make_employer(), make_officer().user.id)


def _dashboard(client: FlaskClient, issued: Issued) -> str:
    employer_login(client, issued.account)
    response = client.get(HOME)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _current_step(page: str) -> list[str]:
    return re.findall(r'<li class="(?:current|stopped)" aria-current="step">([^<]+)</li>', page)


def test_a_new_certificate_is_listed_with_its_days_left_and_no_banner(
    client: FlaskClient, issued: Issued
) -> None:
    before = (issued.not_after - utcnow()).days
    page = _dashboard(client, issued)
    after = (issued.not_after - utcnow()).days  # a second may pass: 365 days, then 364
    assert issued.account.legal_name in page
    assert issued.serial in page
    assert re.search(rf"<td>(?:{before}|{after})</td>", page), page
    assert "renewable from" in page
    assert "Renew it now" not in page
    assert 'role="alert"' not in page
    assert _current_step(page) == ["Issued"]
    assert "No tax certificate is bound" in page
    assert "Change password" in page  # the account facts stay on the page


def test_inside_the_window_a_banner_links_to_the_renewal(
    client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after - dt.timedelta(days=20), tick=True):
        page = _dashboard(client, issued)
    assert re.search(rf"Certificate {issued.serial} expires in (?:19|20) days\.", page), page
    assert f'href="/renewal/{issued.serial}">Renew it now' in page
    assert "expires soon: renew now" in page


def test_after_expiry_within_grace_the_banner_says_expired(
    client: FlaskClient, issued: Issued
) -> None:
    with time_machine.travel(issued.not_after + dt.timedelta(days=10), tick=True):
        page = _dashboard(client, issued)
    assert f"Certificate {issued.serial} has expired." in page
    assert "<td>—</td>" in page
    assert "expired; renewable until" in page


def test_another_employer_sees_only_its_own_records_and_their_progress(
    app: Flask, client: FlaskClient, issued: Issued, make_employer: MakeEmployer
) -> None:
    other = make_employer()
    with app.app_context():
        for status, reason in (
            (ApplicationStatus.DRAFT, None),
            (ApplicationStatus.REJECTED, "The business licence scan is unreadable."),
        ):
            db.session.add(
                Application(
                    employer_id=other.employer_id,
                    status=status,
                    key_source=KeySource.CSR,
                    created_by_id=other.user_id,
                    rejection_reason=reason,
                )
            )
        db.session.commit()
    employer_login(client, other)
    page = client.get(HOME).get_data(as_text=True)
    assert issued.serial not in page
    assert issued.account.legal_name not in page
    assert "You have no certificates yet." in page
    # Newest first: the rejected one stopped at review, the draft is being prepared.
    assert _current_step(page) == ["Rejected", "Being prepared"]
    assert "The business licence scan is unreadable." in page


def test_officers_keep_their_account_page(officer_client: Callable[..., FlaskClient]) -> None:
    page = officer_client().get(HOME).get_data(as_text=True)
    assert "Your certificates" not in page
    assert "Change password" in page
