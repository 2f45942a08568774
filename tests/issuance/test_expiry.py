"""`ca-service expiry run`: each warning once, only the nearest of missed thresholds, none for
revoked or renewed certificates, expiry marking, CA alerts, delivery through a real SMTP
server with retry, two runs at once; the officer's expiry list and chart."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from email.header import decode_header, make_header

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import force_locale, get_locale

from ca_service.audit.models import AuditEvent
from ca_service.config import load_settings, parse_warning_days
from ca_service.db import db, utcnow
from ca_service.employers.models import Employer
from ca_service.errors import ConfigurationError
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.expiry import (
    ExpiryPolicy,
    ExpiryReport,
    first_notice_at,
    plan,
    renewal_url,
    run_expiry,
)
from ca_service.issuance.models import Application
from ca_service.models import Authority, Certificate, CertificateKind, CertificateStatus
from ca_service.outbox.models import Channel, MessageStatus, OutboxMessage
from tests.conftest import CliInvoke, free_port
from tests.issuance.conftest import MakeEmployer, approved_application, employer_login
from tests.outbox.test_delivery import Inbox, run_cli

DAY = dt.timedelta(days=1)
MakeCertificate = Callable[..., int]


@pytest.fixture
def make_certificate(app: Flask, make_employer: MakeEmployer) -> MakeCertificate:
    """An issued employer certificate row ending at ``not_after`` (due as at issuance)."""

    def make(
        not_after: dt.datetime,
        *,
        employer_id: int | None = None,
        renews_id: int | None = None,
        language: str = "en",
    ) -> int:
        if employer_id is None:
            employer_id = make_employer().employer_id
        with app.app_context():
            employer = db.session.get(Employer, employer_id)
            assert employer is not None
            employer.language = language
            issuer = db.session.scalar(sa.select(Authority).where(Authority.parent_id.is_not(None)))
            assert issuer is not None
            row = Certificate(
                issuer_id=issuer.id,
                serial=format(secrets.randbits(150) | (1 << 150), "x"),
                kind=CertificateKind.END_ENTITY,
                status=CertificateStatus.ISSUED,
                subject=f"CN={employer.legal_name}",
                not_before=not_after - 365 * DAY,
                not_after=not_after,
                employer_id=employer_id,
                der=b"not parsed by the expiry run",
                issued_at=utcnow(),
                renews_id=renews_id,
                next_notice_at=first_notice_at(not_after, (30, 14, 7, 1)),
            )
            db.session.add(row)
            db.session.commit()
            return row.id

    return make


def _policy(app: Flask, **overrides: object) -> ExpiryPolicy:
    return ExpiryPolicy.from_settings(settings_of(app).with_overrides(**overrides))


def _run(app: Flask, now: dt.datetime, **overrides: object) -> ExpiryReport:
    with app.app_context():
        report = run_expiry(_policy(app, **overrides), now=now, commit=db.session.commit)
        db.session.commit()
        return report


def _warnings(app: Flask, certificate_id: int) -> list[OutboxMessage]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                sa.select(OutboxMessage)
                .where(OutboxMessage.dedupe_key.like(f"expiry:{certificate_id}:%"))
                .order_by(OutboxMessage.id)
            )
        )
        for row in rows:
            db.session.expunge(row)
        return rows


def _row(app: Flask, certificate_id: int) -> Certificate:
    with app.app_context():
        row = db.session.get(Certificate, certificate_id)
        assert row is not None
        db.session.expunge(row)
        return row


def _events(app: Flask, action: str, target: str) -> int:
    with app.app_context():
        return int(
            db.session.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == action, AuditEvent.target == target)
            )
            or 0
        )


def test_warning_days_are_validated() -> None:
    assert parse_warning_days("1, 30,7") == (30, 7, 1)
    for bad in ("", "30,,7", "0", "-1", "7,7", "seven"):
        with pytest.raises(ValueError, match=r"days|number"):
            parse_warning_days(bad)
    with pytest.raises(ConfigurationError, match="EXPIRY_WARNING_DAYS"):
        load_settings(environ={}, overrides={"EXPIRY_WARNING_DAYS": "30,30"})


def test_plan_picks_the_nearest_threshold_crossed_and_the_next_time() -> None:
    end = dt.datetime(2030, 6, 30, 12, tzinfo=dt.UTC)
    days = (30, 14, 7, 1)
    assert plan(end, end - 31 * DAY, days).threshold is None
    assert plan(end, end - 30 * DAY, days).threshold == 30
    assert plan(end, end - 30 * DAY, days).next_notice_at == end - 14 * DAY
    assert plan(end, end - 3 * DAY, days).threshold == 7  # 30 and 14 were missed: only 7
    assert plan(end, end - DAY / 2, days).next_notice_at == end  # then mark it expired
    assert plan(end, end, days).threshold is None


def test_issuance_stores_the_first_notice_time(app: Flask, make_employer: MakeEmployer) -> None:
    application_id = approved_application(app, make_employer)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        row = service.issue_certificate(
            application=application,
            token=app_token(),
            profile=service.EmployerProfile.from_settings(
                settings_of(app).with_overrides(EXPIRY_WARNING_DAYS="45,10")
            ),
            commit=db.session.commit,
            actor="tests",
        )
        stored = db.session.get(Certificate, row.id)
        assert stored is not None
        assert stored.next_notice_at == stored.not_after - 45 * DAY


def test_each_threshold_is_warned_once_then_the_certificate_is_marked_expired(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    end = utcnow().replace(microsecond=0) + 40 * DAY
    certificate_id = make_certificate(end)
    serial = _row(app, certificate_id).serial
    assert _run(app, end - 31 * DAY).sent == 0
    for days in (30, 14, 7, 1):
        moment = end - days * DAY + dt.timedelta(minutes=5)
        assert _run(app, moment).sent == 1
        assert _run(app, moment).sent == 0  # idempotent: the next minute's cron run
        assert _run(app, moment + dt.timedelta(hours=1)).sent == 0
    messages = _warnings(app, certificate_id)
    emails = [m for m in messages if m.channel is Channel.EMAIL]
    sms = [m for m in messages if m.channel is Channel.SMS]
    assert [m.subject for m in emails] == [
        f"Your organisation certificate expires in {d} {'day' if d == 1 else 'days'}"
        for d in (30, 14, 7, 1)
    ]
    assert len(sms) == 4
    body = emails[0].body
    assert serial in body
    assert f"{end:%Y-%m-%d %H:%M} UTC" in body
    assert "Days left: 30" in body
    assert renewal_url("http://ca.test", serial) == f"http://ca.test/renewal/{serial}"
    assert f"http://ca.test/renewal/{serial}" in body
    assert f"http://ca.test/renewal/{serial}" in sms[0].body
    assert _events(app, "expiry.warned", serial) == 4
    assert _row(app, certificate_id).expired_at is None
    report = _run(app, end + dt.timedelta(seconds=1))
    assert (report.sent, report.expired) == (0, 1)
    row = _row(app, certificate_id)
    assert row.expired_at == end + dt.timedelta(seconds=1)
    assert row.next_notice_at is None
    assert _events(app, "certificate.expired", serial) == 1
    assert _run(app, end + 2 * DAY).expired == 0


def test_thresholds_missed_while_down_send_only_the_nearest(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    end = utcnow() + 40 * DAY
    certificate_id = make_certificate(end)
    assert _run(app, end - 3 * DAY).sent == 1  # 30 and 14 were missed
    assert [m.subject for m in _warnings(app, certificate_id) if m.channel is Channel.EMAIL] == [
        "Your organisation certificate expires in 3 days"
    ]
    assert _run(app, end - 6 * DAY).sent == 0
    assert _run(app, end - DAY).sent == 1  # the 1-day warning still comes
    # Down through the last threshold and the end: marked expired, nothing sent late.
    other = make_certificate(end)
    report = _run(app, end + DAY)
    assert report.expired == 2
    assert _warnings(app, other) == []


def test_no_warning_for_revoked_or_renewed_certificates(
    app: Flask, make_certificate: MakeCertificate, make_employer: MakeEmployer
) -> None:
    end = utcnow() + 40 * DAY
    revoked = make_certificate(end)
    renewed = make_certificate(end)
    employer_id = _row(app, renewed).employer_id
    make_certificate(end + 365 * DAY, employer_id=employer_id, renews_id=renewed)
    # A renewal that was itself revoked does not count: the old one is still warned about.
    renewal_revoked = make_certificate(end)
    replacement = make_certificate(end + 365 * DAY, renews_id=renewal_revoked)
    with app.app_context():
        for row_id in (revoked, replacement):
            row = db.session.get(Certificate, row_id)
            assert row is not None
            row.revoked_at = utcnow()
            row.revocation_reason = "superseded"
        db.session.commit()
    report = _run(app, end - 20 * DAY)
    assert report.sent == 1
    assert report.skipped == 2
    assert _warnings(app, revoked) == []
    assert _warnings(app, renewed) == []
    assert len(_warnings(app, renewal_revoked)) == 2  # e-mail + SMS
    assert _row(app, revoked).next_notice_at is None
    assert _row(app, renewed).next_notice_at == end  # still marked expired at its end
    assert _run(app, end + DAY).expired >= 1
    assert _row(app, renewed).expired_at is not None


def test_ca_administrators_are_warned_about_the_responder_once_per_threshold(
    app: Flask,
) -> None:
    with app.app_context():
        responder = db.session.scalar(
            sa.select(Certificate).where(Certificate.kind == CertificateKind.OCSP_RESPONDER)
        )
        assert responder is not None
        end, serial = responder.not_after, responder.serial
    report = _run(app, end - 10 * DAY, EXPIRY_ALERT_EMAIL="pki-admins@agency.test")
    assert report.alerts == 1
    assert _run(app, end - 9 * DAY, EXPIRY_ALERT_EMAIL="pki-admins@agency.test").alerts == 0
    assert _run(app, end - 5 * DAY, EXPIRY_ALERT_EMAIL="pki-admins@agency.test").alerts == 1
    with app.app_context():
        alerts = list(
            db.session.scalars(
                sa.select(OutboxMessage).where(OutboxMessage.recipient == "pki-admins@agency.test")
            )
        )
    assert len(alerts) == 2
    assert all(serial in a.body and a.channel is Channel.EMAIL for a in alerts)
    assert "OCSP Responder" in alerts[0].subject
    assert _events(app, "expiry.warned", serial) == 2


def test_the_message_is_rendered_in_the_employers_language(
    app: Flask, make_certificate: MakeCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real = force_locale

    # Records the locale the template is rendered under (a wrapper of the real one).
    import contextlib

    @contextlib.contextmanager
    def recording(locale: str):  # type: ignore[no-untyped-def]
        with real(locale):
            seen.append(str(get_locale()))
            yield

    monkeypatch.setattr("ca_service.issuance.expiry.force_locale", recording)
    end = utcnow() + 40 * DAY
    make_certificate(end, language="es")
    make_certificate(end, language="zh-Hans")
    assert _run(app, end - 30 * DAY).sent == 2
    assert sorted(seen) == ["es", "zh_Hans"]


def test_warnings_reach_a_real_mail_server_and_wait_while_it_is_down(
    app: Flask,
    app_overrides: dict[str, object],
    make_certificate: MakeCertificate,
    cli: CliInvoke,
) -> None:
    from aiosmtpd.controller import Controller

    end = utcnow() + 40 * DAY
    certificate_id = make_certificate(end)
    serial = _row(app, certificate_id).serial
    with time_machine.travel(end - 30 * DAY + dt.timedelta(minutes=1), tick=False):
        result = cli("expiry", "run")
    assert result.exit_code == 0, result.output
    assert "sent 1" in result.output
    port = free_port()
    overrides = {**app_overrides, "SMTP_URL": f"smtp://127.0.0.1:{port}"}
    with app.app_context():  # queued "in the future" under time travel: due now
        db.session.execute(sa.update(OutboxMessage).values(next_attempt_at=utcnow()))
        db.session.commit()
    down = run_cli(overrides, "outbox", "deliver")  # nothing listens yet
    assert "to retry" in down.output
    (email,) = [m for m in _warnings(app, certificate_id) if m.channel is Channel.EMAIL]
    assert (email.status, email.attempts) == (MessageStatus.PENDING, 1)
    assert email.last_error
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with app.app_context():
            db.session.execute(sa.update(OutboxMessage).values(next_attempt_at=utcnow()))
            db.session.commit()
        assert run_cli(overrides, "outbox", "deliver").exit_code == 0
    finally:
        controller.stop()
    (email,) = [m for m in _warnings(app, certificate_id) if m.channel is Channel.EMAIL]
    assert (email.status, email.attempts) == (MessageStatus.SENT, 2)
    (message,) = [m for m in inbox.messages if m["To"] == email.recipient]
    assert str(make_header(decode_header(message["Subject"]))) == (
        "Your organisation certificate expires in 30 days"
    )
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert f"/renewal/{serial}" in payload.decode()
    assert "sent 0" in run_cli(overrides, "outbox", "deliver").output


def test_two_runs_at_once_send_each_warning_exactly_once(
    app: Flask, make_certificate: MakeCertificate
) -> None:
    end = utcnow() + 40 * DAY
    ids = [make_certificate(end) for _ in range(40)]
    barrier = threading.Barrier(2)
    reports: list[ExpiryReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with app.app_context():
                policy = _policy(app)
                barrier.wait()
                reports.append(
                    run_expiry(policy, now=end - 29 * DAY, commit=db.session.commit, batch_size=7)
                )
                db.session.commit()
                db.session.remove()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(r.sent for r in reports) == len(ids)
    for certificate_id in ids:
        assert len(_warnings(app, certificate_id)) == 2
        assert _events(app, "expiry.warned", _row(app, certificate_id).serial) == 1


def test_officers_see_expiring_certificates_and_a_weekly_chart(
    app: Flask,
    make_certificate: MakeCertificate,
    officer_client: Callable[..., FlaskClient],
    make_employer: MakeEmployer,
) -> None:
    soon = make_certificate(utcnow() + 10 * DAY)
    later = make_certificate(utcnow() + 100 * DAY)
    client = officer_client()
    page = client.get("/officer/expiring/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert _row(app, soon).serial in html
    assert _row(app, later).serial not in html  # beyond the default 30 days
    assert "<svg" in html
    assert "<script" not in html
    assert "<title>Week 2 (from" in html
    assert ": 1</title>" in html
    wide = client.get("/officer/expiring/?days=120").get_data(as_text=True)
    assert _row(app, later).serial in wide
    for bad in ("0", "366", "abc", "-5"):
        response = client.get(f"/officer/expiring/?days={bad}")
        assert response.status_code == 400
        assert "from 1 to 365" in response.get_data(as_text=True)
    assert client.get("/officer/expiring/?page=x").status_code == 400
    assert client.get("/officer/expiring/?page=" + "9" * 300).status_code == 400
    # Employers may not see it; signed-out visitors are sent to the login page.
    account = make_employer()
    employer = employer_login(app.test_client(), account)
    assert employer.get("/officer/expiring/").status_code == 403
    assert app.test_client().get("/officer/expiring/").status_code == 302


def test_warnings_reach_the_mail_server_in_each_employers_language(
    app: Flask, app_overrides: dict[str, object], make_certificate: MakeCertificate
) -> None:
    from aiosmtpd.controller import Controller

    from ca_service.i18n import format_utc_datetime

    end = utcnow() + 40 * DAY
    spanish = make_certificate(end, language="es")
    chinese = make_certificate(end, language="zh-Hans")  # stored as a browser would say it
    english = make_certificate(end)
    assert _run(app, end - 30 * DAY).sent == 3
    with app.app_context():
        db.session.execute(sa.update(OutboxMessage).values(next_attempt_at=utcnow()))
        db.session.commit()
        with force_locale("es"):
            spanish_date = format_utc_datetime(_row(app, spanish).not_after)
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        overrides = {**app_overrides, "SMTP_URL": f"smtp://127.0.0.1:{port}"}
        assert run_cli(overrides, "outbox", "deliver").exit_code == 0
    finally:
        controller.stop()
    received = {m["To"]: m for m in inbox.messages}

    def mail(certificate_id: int) -> tuple[str, str]:
        (email,) = [m for m in _warnings(app, certificate_id) if m.channel is Channel.EMAIL]
        message = received[email.recipient]
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return str(make_header(decode_header(message["Subject"]))), payload.decode()

    def sms(certificate_id: int) -> str:
        (text,) = [m.body for m in _warnings(app, certificate_id) if m.channel is Channel.SMS]
        return text

    subject, body = mail(spanish)
    assert subject == "Su certificado de organización caduca en 30 días"
    assert "Renuévelo en línea antes de que caduque" in body
    assert "Días restantes: 30" in body
    assert f"caduca el {spanish_date} UTC, dentro de 30 días" in body
    assert "Renew" not in body
    assert sms(spanish).startswith("Su certificado de organización caduca en 30 días.")

    subject, body = mail(chinese)
    assert subject == "您的单位证书将在 30 天后到期"
    assert "请在到期前在线续期" in body
    assert "剩余天数" in body
    assert sms(chinese).startswith("您的单位证书将在 30 天后到期")

    subject, body = mail(english)
    assert subject == "Your organisation certificate expires in 30 days"
    assert "Renew it online before it expires" in body
