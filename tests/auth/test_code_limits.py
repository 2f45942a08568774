"""Limits on sending SMS codes (issue 17): at most one code of a kind per mobile number per
SMS_CODE_INTERVAL_SECONDS, SMS_CODES_PER_NUMBER_HOUR per number and SMS_CODES_PER_ADDRESS_HOUR
per client address, on every path that sends one. Inside a limit the answer is as before (no
hint whether an account exists), nothing is sent, the code already sent still works, and the
suppressed send is audited without the number in clear."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import CodePurpose, OneTimeCode
from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.errors import ConfigurationError
from ca_service.outbox.models import Channel, OutboxMessage
from tests.api.conftest import API, error_of, token_call
from tests.auth.flows import (
    enter_sms_code,
    load_user,
    location,
    login,
    post_form,
    sms_code_for,
)
from tests.issuance.conftest import (
    EmployerAccount,
    MakeEmployer,
    make_employer,  # noqa: F401  (fixture)
    new_number,
)
from tests.issuance.test_flow import register

REAL_LIMITS = {
    "SMS_CODE_INTERVAL_SECONDS": 60,
    "SMS_CODES_PER_NUMBER_HOUR": 5,
    "SMS_CODES_PER_ADDRESS_HOUR": 20,
    # The per-address limit on sign-in POSTs (20 a minute) would answer 429 before the limits
    # on codes are reached; these tests are about the latter.
    "LOGIN_RATE_LIMIT": "10000 per minute",
}
MOBILE = "+8613800138000"  # make_employer's and register()'s number
WITHHELD = "No new code was sent"
REDIS_ENV = "CA_TEST_REDIS_URL"

Limited = Callable[..., Flask]


@pytest.fixture
def limited(app: Flask, app_overrides: dict[str, Any]) -> Iterator[Limited]:
    """Apps with the real limits on the test database (``app`` cleans it up afterwards)."""
    from ca_service.app import create_app

    made: list[Flask] = []

    def make(**settings: Any) -> Flask:
        other = create_app({**app_overrides, **REAL_LIMITS, **settings})
        other.config["TESTING"] = True
        made.append(other)
        return other

    yield make
    for other in made:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


def fresh_client(app: Flask, address: str = "127.0.0.1") -> FlaskClient:
    """A new browser (no cookies) at ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sms_count(app: Flask, purpose: CodePurpose | None = None) -> int:
    """SMS in the outbox (carrying a code of ``purpose``)."""
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(OutboxMessage)
        query = query.where(OutboxMessage.channel == Channel.SMS)
        if purpose is not None:
            codes = sa.select(sa.literal("code:") + sa.cast(OneTimeCode.id, sa.String)).where(
                OneTimeCode.purpose == purpose
            )
            query = query.where(OutboxMessage.dedupe_key.in_(codes))
        return db.session.scalar(query) or 0


def suppressed_events(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    """Target and details of each ``auth.code_suppressed`` event."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditEvent.target, AuditEvent.details).where(
                AuditEvent.action == "auth.code_suppressed"
            )
        ).all()
    return [(target, json.loads(details)) for target, details in rows]


def ask_reset(client: FlaskClient, username: str) -> str:
    response = post_form(client, "/auth/reset", {"username": username})
    assert location(response) == "/auth/reset/confirm"
    return client.get("/auth/reset/confirm").get_data(as_text=True)


FLASH = re.compile(r'<div class="flash (\w+)" role="(?:status|alert)">([^<]*)</div>')


def flashes(page: str) -> list[tuple[str, str]]:
    """The flashed messages of a page, with the seconds rounded to the minute (a request can
    fall a second later than the one before it)."""
    return [(c, re.sub(r"\b(59|60) seconds", "60 seconds", m)) for c, m in FLASH.findall(page)]


def address(i: int) -> str:
    return f"198.51.100.{i + 1}"


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_thirty_reset_requests_send_one_code_then_five_an_hour(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
    spread: bool,
) -> None:
    limited_app = limited()
    account = make_employer()
    pages = [
        ask_reset(
            fresh_client(limited_app, address(i) if spread else "127.0.0.1"), account.username
        )
        for i in range(30)
    ]
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 1
    assert "a six-digit code is on its way" in pages[0]
    for page in pages[1:]:
        assert WITHHELD in page
        assert "new code in 60 seconds" in str(flashes(page))
    # The code sent first still works after 29 suppressed requests.
    code = sms_code_for(limited_app, account.user_id, CodePurpose.PASSWORD_RESET)
    client = fresh_client(limited_app)
    ask_reset(client, account.username)
    response = post_form(
        client,
        "/auth/reset/confirm",
        {
            "code": code,
            "password": "a new and long enough password",
            "confirm": "a new and long enough password",
        },
    )
    assert location(response) == "/auth/login"


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_over_an_hour_a_number_gets_five_reset_codes(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
    spread: bool,
) -> None:
    limited_app = limited()
    account = make_employer()
    with time_machine.travel(dt.datetime.now(dt.UTC), tick=False) as traveller:
        for i in range(30):
            client = fresh_client(limited_app, address(i) if spread else "127.0.0.1")
            ask_reset(client, account.username)
            traveller.shift(dt.timedelta(seconds=61))  # past the cool-down every time
        # 30 minutes in: five codes, the hourly limit; the other 25 were suppressed.
        assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 5
        traveller.shift(dt.timedelta(minutes=31))  # the first codes leave the hour
        ask_reset(fresh_client(limited_app, "192.0.2.9"), account.username)
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 6
    assert len(suppressed_events(limited_app)) == 25


def test_one_address_gets_twenty_codes_an_hour_across_numbers(
    app: Flask,
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    limited_app = limited()
    accounts = [make_employer() for _ in range(30)]
    with app.app_context():
        for i, account in enumerate(accounts):
            employer = db.session.get(Employer, account.employer_id)
            assert employer is not None
            employer.mobile = f"+86139{i:08d}"
        db.session.commit()
    pages = [ask_reset(fresh_client(limited_app), a.username) for a in accounts]
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 20
    assert all(WITHHELD in page for page in pages[20:])
    assert {d["limit"] for _, d in suppressed_events(limited_app)} == {"address_hour"}
    # Another address is not held back by this one.
    ask_reset(fresh_client(limited_app, "192.0.2.9"), accounts[-1].username)
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 21


def test_a_reset_answers_alike_whether_or_not_the_account_exists(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    limited_app = limited()
    account = make_employer()
    real = [ask_reset(fresh_client(limited_app), account.username) for _ in range(3)]
    ghost_name = new_number()  # a valid number nobody registered
    ghost = [ask_reset(fresh_client(limited_app), ghost_name) for _ in range(3)]
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 1
    # The same answers, the cool-down included, with or without an account behind the name.
    assert [flashes(page) for page in real] == [flashes(page) for page in ghost]
    assert WITHHELD not in real[0]
    assert WITHHELD in real[1]


def test_suppressed_sends_are_audited_without_the_number(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    limited_app = limited()
    account = make_employer()
    for _ in range(4):
        ask_reset(fresh_client(limited_app), account.username)
    events = suppressed_events(limited_app)
    assert len(events) == 3
    for target, details in events:
        assert target == account.username
        assert details["purpose"] == "password_reset"
        assert details["limit"] == "interval"
        assert details["mobile_ending"] == "8000"
        assert 0 < int(details["retry_after_seconds"]) <= 60
        text = json.dumps(details)
        assert "13800138000" not in text
        assert "127.0.0.1" not in text


def sign_in_password(client: FlaskClient, account: EmployerAccount) -> str:
    """The password step; returns the SMS code page."""
    assert location(login(client, account.username, account.password)) == "/auth/sms-code"
    return client.get("/auth/sms-code").get_data(as_text=True)


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_thirty_sign_ins_send_one_code_and_it_still_works(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
    spread: bool,
) -> None:
    limited_app = limited()
    account = make_employer()
    clients = [fresh_client(limited_app, address(i) if spread else "127.0.0.1") for i in range(30)]
    pages = [sign_in_password(client, account) for client in clients]
    assert sms_count(limited_app, CodePurpose.LOGIN) == 1
    assert all(WITHHELD in page for page in pages[1:])
    code = sms_code_for(limited_app, account.user_id)
    assert location(enter_sms_code(clients[-1], code)) == "/auth/home"


def test_resending_the_sign_in_code_is_limited(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    limited_app = limited()
    account = make_employer()
    client = fresh_client(limited_app)
    sign_in_password(client, account)
    for _ in range(29):
        response = post_form(client, "/auth/sms-code/resend", {}, token_from="/auth/sms-code")
        assert location(response) == "/auth/sms-code"
    assert WITHHELD in client.get("/auth/sms-code").get_data(as_text=True)
    assert sms_count(limited_app, CodePurpose.LOGIN) == 1
    assert len(suppressed_events(limited_app)) == 29
    code = sms_code_for(limited_app, account.user_id)
    assert location(enter_sms_code(client, code)) == "/auth/home"


def test_kinds_of_code_are_counted_apart(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    """A stranger flooding password resets does not keep the sign-in code from its owner."""
    limited_app = limited()
    account = make_employer()
    for i in range(10):
        ask_reset(fresh_client(limited_app, address(i)), account.username)
    client = fresh_client(limited_app)
    assert WITHHELD not in sign_in_password(client, account)
    assert sms_count(limited_app, CodePurpose.LOGIN) == 1
    assert sms_count(limited_app, CodePurpose.PASSWORD_RESET) == 1


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_api_token_calls_without_a_code_send_one(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
    spread: bool,
) -> None:
    limited_app = limited()
    account = make_employer()
    messages = []
    for i in range(30):
        client = fresh_client(limited_app, address(i) if spread else "127.0.0.1")
        response = token_call(client, username=account.username, password=account.password)
        assert response.status_code == 401
        error = error_of(response)
        assert error["code"] == "sms_code_required"
        messages.append(error["message"])
    assert sms_count(limited_app, CodePurpose.LOGIN) == 1
    assert all(WITHHELD in message and "ending in 8000" in message for message in messages[1:])
    assert len(suppressed_events(limited_app)) == 29
    code = sms_code_for(limited_app, account.user_id)
    response = token_call(
        fresh_client(limited_app),
        username=account.username,
        password=account.password,
        sms_code=code,
    )
    assert response.status_code == 201, response.get_data(as_text=True)


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_thirty_registrations_with_one_mobile_send_one_code(
    app: Flask,
    limited: Limited,
    spread: bool,
) -> None:
    limited_app = limited()
    for i in range(30):
        client = fresh_client(limited_app, address(i) if spread else "127.0.0.1")
        status, _ = register(client, new_number())
        assert status == 302
        if i:
            page = client.get("/auth/confirm-mobile").get_data(as_text=True)
            assert "No code was sent to your mobile number yet" in page
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Employer)) == 30
    assert sms_count(limited_app) == 1


def test_registration_through_the_api_says_when_no_code_went_out(
    limited: Limited,
) -> None:
    limited_app = limited()
    bodies = []
    for i in range(3):
        response = fresh_client(limited_app, address(i)).post(
            f"{API}/employers",
            json={
                "registration_number": new_number(),
                "legal_name": "Example Co",
                "administrator_name": "Li Hua",
                "mobile": MOBILE,
                "email": "hr@example.test",
                "password": "a long enough password",
            },
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        bodies.append(response.get_json())
    assert bodies[0]["code_sent"] is True
    assert [b["code_sent"] for b in bodies[1:]] == [False, False]
    assert 0 < bodies[2]["retry_after_seconds"] <= 60
    assert sms_count(limited_app) == 1


@pytest.mark.parametrize("spread", [False, True], ids=["one-address", "30-addresses"])
def test_mobile_confirmation_resends_are_limited(
    limited: Limited,
    spread: bool,
) -> None:
    """The web resend and the API's resend-code, 30 times together: the registration's code
    is the only one, and it still confirms the number."""
    limited_app = limited()
    number = new_number()
    client = fresh_client(limited_app)
    assert register(client, number)[0] == 302
    for i in range(15):
        response = post_form(
            client, "/auth/confirm-mobile/resend", {}, token_from="/auth/confirm-mobile"
        )
        assert location(response) == "/auth/confirm-mobile"
        api = fresh_client(limited_app, address(i) if spread else "127.0.0.1")
        answer = api.post(
            f"{API}/employers/resend-code",
            json={"username": number, "password": "a long enough password"},
        )
        assert answer.status_code == 202
        assert answer.get_json()["code_sent"] is False
        assert int(answer.headers["Retry-After"]) <= 60
    assert WITHHELD in client.get("/auth/confirm-mobile").get_data(as_text=True)
    assert sms_count(limited_app) == 1
    assert len(suppressed_events(limited_app)) == 30
    user = load_user(limited_app, number)
    code = sms_code_for(limited_app, user.id, CodePurpose.CONFIRM_MOBILE)
    response = post_form(client, "/auth/confirm-mobile", {"code": code})
    assert location(response) == "/auth/home"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMS_CODE_INTERVAL_SECONDS", -1),
        ("SMS_CODE_INTERVAL_SECONDS", 3601),
        ("SMS_CODES_PER_NUMBER_HOUR", 0),
        ("SMS_CODES_PER_ADDRESS_HOUR", 0),
    ],
)
def test_limits_are_validated(name: str, value: int) -> None:
    from ca_service.config import load_settings

    with pytest.raises(ConfigurationError, match=name):
        load_settings(environ={}, overrides={name: value})


@pytest.mark.skipif(not os.environ.get(REDIS_ENV), reason=f"set {REDIS_ENV} to test with Redis")
def test_workers_share_the_limits_in_redis(
    limited: Limited,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    """Two apps (two workers) on one Redis: the second one's requests are inside the first's
    cool-down; the store holds digests, not the number or the address."""
    import redis

    url = os.environ[REDIS_ENV]
    workers = [limited(RATELIMIT_STORAGE_URI=url), limited(RATELIMIT_STORAGE_URI=url)]
    account = make_employer()
    for i in range(30):
        ask_reset(fresh_client(workers[i % 2], address(i)), account.username)
    assert sms_count(workers[0], CodePurpose.PASSWORD_RESET) == 1
    assert len(suppressed_events(workers[0])) == 29
    keys = [key.decode() for key in redis.Redis.from_url(url).keys("*sms-code*")]
    assert keys
    assert not [k for k in keys if "13800138000" in k or "198.51.100" in k or account.username in k]
