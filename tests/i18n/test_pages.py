"""Pages in Spanish and Chinese: chosen from Accept-Language, or switched with the header's
form (a cookie, and for an employer administrator the employer's language for e-mail and SMS),
with <html lang>, translated texts and dates in the reader's language."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import force_locale

from ca_service.db import db
from ca_service.employers.models import Employer
from ca_service.i18n import LANGUAGE_COOKIE, format_number, format_utc_datetime
from ca_service.models import Authority
from ca_service.outbox.models import Channel, OutboxMessage
from tests.auth.flows import csrf_token, location, login
from tests.issuance.conftest import MakeEmployer, employer_login, make_employer  # noqa: F401
from tests.issuance.test_flow import register

# (Accept-Language header, <html lang>, texts the page must show) per page and language.
PAGES = {
    "/auth/login": {
        "es": ("es-ES,es;q=0.9", "es", ["Iniciar sesión", "¿Olvidó su contraseña?", "Usuario"]),
        "zh_Hans": ("zh-CN,zh;q=0.9", "zh-Hans", ["登录", "忘记密码", "用户名"]),
    },
    "/employers/register": {
        "es": ("es-MX", "es", ["Registre su empresa", "Número de móvil registrado"]),
        "zh_Hans": ("zh-Hans", "zh-Hans", ["单位注册", "统一社会信用代码", "预留手机号码"]),
    },
    "/pki/": {
        "es": ("es", "es", ["Autoridades de certificación", "Lista de revocación", "Emisor"]),
        "zh_Hans": ("zh", "zh-Hans", ["证书颁发机构", "证书吊销列表", "颁发者"]),
    },
}
HTML_LANG = re.compile(r'<html lang="([^"]+)">')


def _html_lang(page: str) -> str:
    match = HTML_LANG.search(page)
    assert match, page[:200]
    return match.group(1)


def switch_language(client: FlaskClient, language: str, back_to: str) -> str:
    """Post the header's language form from ``back_to``; the redirect's target."""
    token = csrf_token(client, back_to)
    response = client.post(
        "/language", data={"language": language, "next": back_to, "csrf_token": token}
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    return response.headers["Location"].removeprefix("http://localhost")


@pytest.mark.parametrize("path", list(PAGES))
@pytest.mark.parametrize("language", ["es", "zh_Hans"])
def test_pages_follow_accept_language(client: FlaskClient, path: str, language: str) -> None:
    header, html_lang, texts = PAGES[path][language]
    page = client.get(path, headers={"Accept-Language": header}).get_data(as_text=True)
    assert _html_lang(page) == html_lang
    for text in texts:
        assert text in page, (path, language, text)
    english_page = client.get(path)
    assert "Accept-Language" in english_page.headers["Vary"]
    english = english_page.get_data(as_text=True)
    assert _html_lang(english) == "en"
    assert not any(text in english for text in texts if not text.isascii())


@pytest.mark.parametrize("language", ["es", "zh_Hans"])
def test_the_switch_overrides_accept_language(client: FlaskClient, language: str) -> None:
    assert switch_language(client, language, "/employers/register") == "/employers/register"
    cookie = client.get_cookie(LANGUAGE_COOKIE)
    assert cookie is not None
    assert cookie.value == language
    assert cookie.http_only
    _header, html_lang, texts = PAGES["/employers/register"][language]
    # The browser asks for English; the chosen language wins.
    page = client.get("/employers/register", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert _html_lang(page) == html_lang
    assert all(text in page for text in texts)
    assert f'<option value="{language}" ' in page
    assert re.search(rf'<option value="{language}" lang="[^"]+" selected>', page)
    assert switch_language(client, "en", "/auth/login") == "/auth/login"
    assert "Forgot your password?" in client.get("/auth/login").get_data(as_text=True)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "evil.example",
        "",
        "javascript:alert(1)",
    ],
)
def test_the_switch_goes_back_only_to_a_local_path(client: FlaskClient, target: str) -> None:
    token = csrf_token(client, "/auth/login")
    response = client.post(
        "/language", data={"language": "es", "next": target, "csrf_token": token}
    )
    assert response.status_code == 303
    assert response.headers["Location"].removeprefix("http://localhost") == "/"


def test_the_switch_keeps_the_query_and_needs_its_csrf_token(client: FlaskClient) -> None:
    assert (
        switch_language(client, "es", "/auth/login?next=%2Fpki%2F") == "/auth/login?next=%2Fpki%2F"
    )
    refused = client.post("/language", data={"language": "zh_Hans", "next": "/auth/login"})
    assert refused.status_code == 400
    assert client.get_cookie(LANGUAGE_COOKIE).value == "es"  # type: ignore[union-attr]


def test_an_unknown_language_falls_back_to_english(client: FlaskClient) -> None:
    switch_language(client, "tlh", "/auth/login")
    assert client.get_cookie(LANGUAGE_COOKIE).value == "en"  # type: ignore[union-attr]
    page = client.get("/auth/login", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert _html_lang(page) == "en"


def _language_of(app: Flask, employer_id: int) -> str:
    with app.app_context():
        employer = db.session.get(Employer, employer_id)
        assert employer is not None
        return employer.language


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        (
            "es",
            ["Mi cuenta", "Usuario", "Rol", "administrador del empleador", "Cambiar la contraseña"],
        ),
        ("zh_Hans", ["我的账户", "用户名", "角色", "用人单位管理员", "修改密码"]),
    ],
)
def test_an_administrator_switches_the_employers_language(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
    language: str,
    texts: list[str],
) -> None:
    account = make_employer()
    employer_login(client, account)
    assert _language_of(app, account.employer_id) == "en"
    assert switch_language(client, language, "/auth/home") == "/auth/home"
    page = client.get("/auth/home").get_data(as_text=True)
    assert all(text in page for text in texts), page
    # E-mail and SMS follow: the employer's stored language changed, and the next sign-in's
    # code and notice are written in it.
    assert _language_of(app, account.employer_id) == language
    other = app.test_client()
    assert location(login(other, account.username, account.password)) == "/auth/sms-code"
    with app.app_context():
        sms = db.session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.channel == Channel.SMS, OutboxMessage.subject.is_not(None))
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        ).one()
    expected = {"es": "Su código de inicio de sesión es", "zh_Hans": "您的登录验证码为"}[language]
    assert expected in sms.body


def test_an_anonymous_switch_changes_no_employer(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    account = make_employer()
    switch_language(client, "es", "/auth/login")
    assert _language_of(app, account.employer_id) == "en"


def test_registration_keeps_the_language_of_the_page(app: Flask, client: FlaskClient) -> None:
    from tests.issuance.conftest import new_number

    switch_language(client, "zh_Hans", "/employers/register")
    number = new_number()
    status, _text = register(client, number)
    assert status == 302
    with app.app_context():
        employer = db.session.scalar(
            sa.select(Employer).where(Employer.registration_number == number)
        )
        assert employer is not None
        assert employer.language == "zh_Hans"
        code_sms = db.session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.channel == Channel.SMS, OutboxMessage.recipient == employer.mobile)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        ).one()
    assert "您的确认验证码为" in code_sms.body
    assert "手机号码" in client.get("/auth/confirm-mobile").get_data(as_text=True)


@pytest.mark.parametrize(
    ("language", "shown"),
    [("en", "2026-12-06 21:45"), ("es", "6 dic 2026, 21:45"), ("zh_Hans", "2026年12月6日 21:45")],
)
def test_dates_and_numbers_in_each_language(app: Flask, language: str, shown: str) -> None:
    moment = dt.datetime(2026, 12, 6, 21, 45, 59, tzinfo=dt.UTC)
    with app.app_context(), force_locale(language):
        assert format_utc_datetime(moment) == shown
        # A naive value from the database is UTC; another zone is converted to UTC.
        assert format_utc_datetime(moment.replace(tzinfo=None)) == shown
        beijing = dt.timezone(dt.timedelta(hours=8))
        assert format_utc_datetime(moment.astimezone(beijing)) == shown
        assert format_number(1234567) == {"en": "1,234,567", "es": "1.234.567"}.get(
            language, "1,234,567"
        )


@pytest.mark.parametrize("language", ["es", "zh_Hans"])
def test_pages_show_dates_in_the_readers_language_and_say_utc(
    app: Flask, client: FlaskClient, language: str
) -> None:
    with app.app_context():
        root = db.session.scalars(sa.select(Authority).where(Authority.parent_id.is_(None))).one()
        assert root.certificate is not None
        not_after = root.certificate.not_after
        with force_locale(language):
            shown = format_utc_datetime(not_after)
    iso = f"{not_after:%Y-%m-%d %H:%M} UTC"
    page = client.get("/pki/", headers={"Accept-Language": PAGES["/pki/"][language][0]})
    text = page.get_data(as_text=True)
    assert f"{shown} UTC" in text
    assert iso not in text
    assert iso in client.get("/pki/").get_data(as_text=True)
