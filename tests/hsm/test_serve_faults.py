"""HSM faults under `ca-service serve` (issue #16, scope 3): the CA token taken away while two
gunicorn workers serve (its SoftHSM directory moved off), then put back; the module finalised
underneath an app; wrong PINs at start-up and a PIN changed while serving.

While the token is away, issuance, renewal and revocation (CRL publication, OCSP re-signing)
get a translated 503 quickly, never a 500 or a hang, and OCSP answers that must be signed an
unsigned tryLater (RFC 6960); OCSP requests without a nonce are answered from the pre-signed
responses. When the token is back,
the same server recovers without a restart. A wrong PIN is offered to the token once."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.hsm_access import app_token
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.models import Certificate, CertificateStatus
from tests.api.conftest import request_token, token_of
from tests.auth.conftest import make_officer  # noqa: F401  (fixture used below)
from tests.auth.flows import MakeOfficer, code_at
from tests.conftest import HsmEnv, serving
from tests.hsm.support import token_away
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    Issued,
    MakeEmployer,
    csr_pem,
    issue_employer_certificate,
    make_employer,
    submitted_application,
)
from tests.revocation.ocsp_tools import ca_certificates

API = "/api/v1"
# Each worker looks for a lost token again at most once a second (hsm.token.RESCAN_INTERVAL).
RECOVERY_SECONDS = 20
# What a 503 may take at most: an answer, not a hang.
ANSWER_SECONDS = 5.0


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes
    seconds: float

    @property
    def body(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _call(
    base: str,
    path: str,
    *,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    raw: bytes | None = None,
    language: str = "en",
) -> Answer:
    headers = {"Accept-Language": language, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if raw is not None:
        headers["Content-Type"] = "application/ocsp-request"
    request = urllib.request.Request(  # noqa: S310  (the loopback URL of the test server)
        base + path, data=data, headers=headers, method="POST" if data is not None else "GET"
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read(), error.code
    return Answer(status, payload, time.monotonic() - started)


def _ocsp_der(issued: Issued, issuer: Any, *, nonce: bool) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(
        issued.certificate,
        issuer,
        hashes.SHA1(),  # noqa: S303  (RFC 5019 CertID)
    )
    if nonce:
        builder = builder.add_extension(x509_nonce(), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def x509_nonce() -> x509.OCSPNonce:
    return x509.OCSPNonce(secrets.token_bytes(16))


def _ocsp_status(answer: Answer) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(answer.content).response_status


def _assert_try_later(answer: Answer) -> None:
    """RFC 6960's answer while the HSM cannot sign: an unsigned tryLater, quickly."""
    assert answer.status == 200, (answer.status, answer.body[:300])
    assert answer.seconds < ANSWER_SECONDS, answer
    assert _ocsp_status(answer) is ocsp.OCSPResponseStatus.TRY_LATER


def _until_signed(send: Callable[[], Answer]) -> Answer:
    """``send`` again until the OCSP answer is signed (not tryLater)."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        answer = send()
        assert answer.status == 200, answer.body[:300]
        if _ocsp_status(answer) is not ocsp.OCSPResponseStatus.TRY_LATER:
            return answer
        assert time.monotonic() < deadline, "no recovery: still tryLater"
        time.sleep(0.3)


def _token(app: Flask, username: str, password: str, totp_code: str | None = None) -> str:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = f"10.31.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    return token_of(request_token(client, username, password, totp_code))


def _until_recovered(send: Callable[[], Answer], wanted: int) -> Answer:
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        answer = send()
        if answer.status == wanted:
            return answer
        assert answer.status == 503, answer.body[:300]
        assert time.monotonic() < deadline, f"no recovery: {answer.body[:300]}"
        time.sleep(0.3)


def _server_env(app_overrides: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_")}
    env.update({f"CA_{k}": str(v) for k, v in app_overrides.items()})
    env["CA_TEST_HSM_PIN"] = os.environ["CA_TEST_HSM_PIN"]
    env.update(extra)
    return env


def _assert_unavailable(answer: Answer, language: str = "es") -> None:
    assert answer.status == 503, (answer.status, answer.body[:300])
    assert answer.seconds < ANSWER_SECONDS, answer
    error = answer.json()["error"]
    # The generic HSM answer, or issuance's own (the approval stands, retry the issuance).
    assert error["code"] in {"hsm_unavailable", "service_unavailable"}, error
    assert "HSM" in error["message"]
    if language == "es":
        assert error["message"].startswith("El "), error  # translated, not the English text


def test_token_removed_while_serving_answers_503_then_recovers(
    app: Flask,
    app_overrides: dict[str, Any],
    hsm_env: HsmEnv,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
    tmp_path: Path,
) -> None:
    officer = make_officer()
    officer_token = _token(app, officer.user.username, officer.password, code_at(officer.seed))
    approver = make_officer().user.id
    fresh = issue_employer_certificate(app, make_employer(), approver)  # pre-signed OCSP
    renewable = issue_employer_certificate(app, make_employer(), approver, days_ago=340)
    revocable = issue_employer_certificate(app, make_employer(), approver)
    employer_token = _token(app, renewable.account.username, renewable.account.password)
    application_id = submitted_application(app, make_employer())
    _root, issuing, _responder = ca_certificates(app)
    stored_get = "/ocsp/" + base64.b64encode(_ocsp_der(fresh, issuing, nonce=False)).decode()

    def issue(step: str = "issue") -> Answer:
        # An approval that the HSM could not follow up stays approved; /issue retries it.
        return _call(
            base,
            f"{API}/review/{application_id}/{step}",
            token=officer_token,
            body={},
            language="es",
        )

    def renew() -> Answer:
        csr = csr_pem(ec.generate_private_key(ec.SECP256R1()))
        return _call(
            base,
            f"{API}/certificates/{renewable.serial}/renewal",
            token=employer_token,
            body={"csr_pem": csr},
            language="es",
        )

    def revoke() -> Answer:
        return _call(
            base,
            f"{API}/review/certificates/{revocable.serial}/revoke",
            token=officer_token,
            body={"reason": "privilegeWithdrawn"},
            language="es",
        )

    def ocsp_signed() -> Answer:
        return _call(base, "/ocsp", raw=_ocsp_der(fresh, issuing, nonce=True))

    def crl_publish() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ca_service", "crl", "publish"],
            env=_server_env(app_overrides),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    log = tmp_path / "server.log"
    with serving(app_overrides, log) as (base, _proc):
        assert _call(base, stored_get).status == 200
        assert _ocsp_status(ocsp_signed()) is ocsp.OCSPResponseStatus.SUCCESSFUL
        with token_away(hsm_env, tmp_path):
            _assert_unavailable(renew())  # the renewal application stays, to be issued later
            for step in ("approve", "issue"):  # again once the workers know it is gone
                _assert_unavailable(issue(step))
                _assert_unavailable(revoke())
                _assert_try_later(ocsp_signed())
                # No nonce: the pre-signed response, no HSM needed.
                stored = _call(base, stored_get)
                assert stored.status == 200, stored.body[:300]
                assert _ocsp_status(stored) is ocsp.OCSPResponseStatus.SUCCESSFUL
            published = crl_publish()
            assert published.returncode != 0
            assert hsm_env.ca_token_label in published.stderr
            assert "Traceback" not in published.stderr + published.stdout
            with app.app_context():
                # Nothing half-done: no certificate for the application, the revocable one
                # still good.
                application = db.session.get(Application, application_id)
                assert application is not None
                assert application.status is not ApplicationStatus.ISSUED
                row = db.session.get(Certificate, revocable.certificate_id)
                assert row is not None
                assert row.revoked_at is None

        # Back: the same processes pick it up again, no restart.
        assert _until_recovered(issue, 200).status == 200
        with app.app_context():
            renewal_id = db.session.scalars(
                sa.select(Application.id)
                .where(Application.employer_id == renewable.account.employer_id)
                .order_by(Application.id.desc())
            ).first()
        assert renewal_id is not None
        assert renewal_id != renewable.application_id
        renewed = _until_recovered(
            lambda: _call(base, f"{API}/review/{renewal_id}/issue", token=officer_token, body={}),
            200,
        )
        assert renewed.json()["status"] == "issued", renewed.body
        assert _until_recovered(revoke, 200).status == 200
        signed = _until_signed(ocsp_signed)
        assert _ocsp_status(signed) is ocsp.OCSPResponseStatus.SUCCESSFUL
        published = crl_publish()
        assert published.returncode == 0, published.stderr
    text = log.read_text()
    assert " 500 " not in text
    assert "Traceback" not in text
    with app.app_context():
        issued = db.session.scalars(
            sa.select(Certificate.id).where(
                Certificate.employer_id.is_not(None),
                Certificate.status == CertificateStatus.ISSUED,
            )
        ).all()
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.ISSUED
        # Three issued by the test, one by the approval, one by the renewal: nothing twice
        # (the failed attempts' reserved rows stay unsigned, for `ca-service reconcile`).
        assert len(issued) == 5


def test_module_finalised_underneath_the_app(
    app: Flask,
    client: FlaskClient,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    issued = issue_employer_certificate(app, make_employer(), None)
    _root, issuing, _responder = ca_certificates(app)
    with app.app_context():
        token = app_token()
    pkcs11.lib(token.config.module_path).finalize()  # every session and login of the process
    response = client.post(
        "/ocsp",
        data=_ocsp_der(issued, issuing, nonce=True),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert response.status_code == 200
    answer = ocsp.load_der_ocsp_response(response.get_data())
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD


def _token_flags(hsm_env: HsmEnv) -> pkcs11.TokenFlag:
    module = app_module()
    return pkcs11.lib(module).get_token(token_label=hsm_env.ca_token_label).flags


def app_module() -> str:
    from hsm import find_softhsm_module

    module = find_softhsm_module()
    assert module is not None
    return module


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["init"]])
def test_wrong_pin_at_start_up_is_one_clear_error(
    app: Flask,
    app_overrides: dict[str, Any],
    hsm_env: HsmEnv,
    command: list[str],
) -> None:
    _right_login(app_overrides)
    assert not _token_flags(hsm_env) & pkcs11.TokenFlag.USER_PIN_COUNT_LOW
    wrong = secrets.token_hex(8)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ca_service", *command],
        env=_server_env(app_overrides, CA_TEST_HSM_PIN=wrong),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert time.monotonic() - started < 60
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert repr(hsm_env.ca_token_label) in errors[0]
    assert "rejected the PIN" in errors[0]
    assert "$CA_TEST_HSM_PIN" in errors[0]  # where the PIN came from, never the PIN
    assert wrong not in output
    assert hsm_env.ca_pin not in output
    # The token saw the failure (SoftHSM flags it; a real HSM counts it towards locking).
    assert _token_flags(hsm_env) & pkcs11.TokenFlag.USER_PIN_COUNT_LOW
    _right_login(app_overrides)
    assert not _token_flags(hsm_env) & pkcs11.TokenFlag.USER_PIN_COUNT_LOW


def _right_login(app_overrides: dict[str, Any]) -> None:
    """A login with the right PIN in a process of its own, which clears the failure flag."""
    script = (
        "from ca_service.app import create_app; from ca_service.hsm_access import check_login; "
        "check_login(create_app())"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        env=_server_env(app_overrides),
        capture_output=True,
        check=True,
        timeout=120,
    )


def test_pin_changed_while_serving_is_offered_once(
    app: Flask,
    app_overrides: dict[str, Any],
    hsm_env: HsmEnv,
    make_employer: MakeEmployer,  # noqa: F811
    tmp_path: Path,
) -> None:
    issued = issue_employer_certificate(app, make_employer(), None)
    _root, issuing, _responder = ca_certificates(app)
    der = _ocsp_der(issued, issuing, nonce=True)
    new_pin = secrets.token_hex(8)
    with app.app_context():
        token = app_token()
        token.check_login()
    log = tmp_path / "server.log"
    requests = 12
    # One worker: a worker that handles no request while the token is away keeps its login.
    with serving(app_overrides, log, "--workers", "1") as (base, _proc):
        assert _call(base, "/ocsp", raw=der).status == 200
        with (
            pkcs11.lib(app_module())
            .get_token(token_label=hsm_env.ca_token_label)
            .open(rw=True) as session
        ):
            session.set_pin(hsm_env.ca_pin, new_pin)
        try:
            # The workers' logins end (the token goes and comes back); logging in again fails.
            with token_away(hsm_env, tmp_path):
                _assert_try_later(_call(base, "/ocsp", raw=der))
            answers = [_call(base, "/ocsp", raw=der) for _ in range(requests)]
            time.sleep(1.5)  # past the rescan interval: the workers look for the token again
            answers += [_call(base, "/ocsp", raw=der) for _ in range(requests)]
        finally:
            with (
                pkcs11.lib(app_module())
                .get_token(token_label=hsm_env.ca_token_label)
                .open(rw=True) as session
            ):
                session.set_pin(new_pin, hsm_env.ca_pin)
        assert {a.status for a in answers} == {200}, [a.body[:200] for a in answers]
        assert {_ocsp_status(a) for a in answers} == {ocsp.OCSPResponseStatus.TRY_LATER}
    text = log.read_text()
    # One C_Login with the old PIN, however many requests came.
    assert text.count("the token rejected the PIN (") == 1, text[-3000:]
    # The rest: "token not present" until the next rescan, then refused without a C_Login.
    assert text.count("rejected this PIN before") >= requests - 1
    assert hsm_env.ca_pin not in text
    assert new_pin not in text
