"""Counter provisioning: the key is generated on the employer's token (a second SoftHSM
token), the certificate issued for it and written next to it; the key never leaves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from flask.testing import FlaskClient

from ca_service.db import db
from ca_service.issuance.models import Application, ApplicationStatus
from hsm import HSMConfig, Token, find_softhsm_module
from tests.conftest import CliInvoke, HsmEnv
from tests.issuance.conftest import MakeEmployer, employer_login, sealed_documents
from tests.issuance.seal_factory import Authority
from tests.issuance.test_flow import new_application, officer_post, submit, upload


def _counter_application(
    app: Flask,
    make_employer: MakeEmployer,
    ca: Authority,
    officer_client: Callable[..., FlaskClient],
) -> int:
    account = make_employer()
    client = employer_login(app.test_client(), account)
    application_id = new_application(client, key_source="counter")
    for doc_type, pdf in sealed_documents(ca, account.number).items():
        assert upload(client, application_id, doc_type, pdf)[0] == 302
    assert submit(client, application_id)[0] == 302  # no CSR: the key is made at the counter
    assert officer_post(officer_client(), application_id, "approve") == 302
    return application_id


def test_provision_writes_the_certificate_next_to_a_key_that_never_leaves(
    app: Flask,
    cli: CliInvoke,
    hsm_env: HsmEnv,
    make_employer: MakeEmployer,
    trusted_seal_ca: Authority,
    officer_client: Callable[..., FlaskClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application_id = _counter_application(app, make_employer, trusted_seal_ca, officer_client)
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.APPROVED  # waits for the counter
    label, pin = hsm_env.new_token("ukey")
    monkeypatch.setenv("UKEY_PIN", pin)
    args = ("token", "provision", "--application", str(application_id))
    args += ("--token-label", label, "--pin-env", "UKEY_PIN")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "issued certificate" in result.output

    module = find_softhsm_module()
    assert module
    ukey = Token(HSMConfig(module_path=module, token_label=label, pin=pin, pool_size=1))
    try:
        der = ukey.certificate("employer-key")
        assert der is not None
        certificate = x509.load_der_x509_certificate(der)
        spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert certificate.public_key().public_bytes(*spki) == ukey.public_key(
            "employer-key"
        ).public_bytes(*spki)
        with pytest.raises(TypeError):
            ukey.private_key("employer-key").private_bytes(  # type: ignore[call-arg]
                Encoding.DER
            )
    finally:
        ukey.close()
    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        assert application.status is ApplicationStatus.ISSUED
        assert application.certificate is not None
        assert application.certificate.der == der

    # Running it again changes nothing: same certificate, same key.
    again = cli(*args)
    assert again.exit_code == 0, again.output
    with app.app_context():
        count = db.session.scalar(
            db.select(db.func.count())
            .select_from(Application)
            .where(Application.id == application_id, Application.certificate_id.is_not(None))
        )
    assert count == 1


def test_provision_of_an_unknown_application_is_a_clear_error(
    app: Flask, cli: CliInvoke, hsm_env: HsmEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    label, pin = hsm_env.new_token("ukey")
    monkeypatch.setenv("UKEY_PIN", pin)
    result = cli("token", "provision", "--application", "999999", "--token-label", label)
    assert result.exit_code != 0
    assert "no application 999999" in result.output
    assert "Traceback" not in result.output
