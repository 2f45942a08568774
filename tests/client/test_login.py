"""`ca-client login`: the employer's key on its SoftHSM "UKey" signs the challenge of a running
`ca-service serve` (gunicorn, two workers): an API token without --challenge, and a browser
signed in with --challenge."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.db import db
from hsm import Token
from tests.api.conftest import request_token, token_of
from tests.auth.certificates import issue_employer_certificate
from tests.binding.conftest import CrlServer, crl_server  # noqa: F401  (fixture)
from tests.binding.tax_ca import TaxCA
from tests.client.conftest import ClientRun, UKey
from tests.issuance.conftest import MakeEmployer, make_employer  # noqa: F401

NONCE = re.compile(r"--challenge ([A-Za-z0-9_-]{40,})")


def _ukey_with_certificate(
    app: Flask,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    tmp_path: Path,
) -> str:
    """Key generated on the UKey by ca-client, certificate issued by our CA and stored beside
    it by ca-client; returns the username."""
    made = run("keygen", "--token-label", ukey.label, "--csr", "-")
    assert made.exit_code == 0, made.output
    account = make_employer()
    certificate = issue_employer_certificate(app, account, ukey_token.private_key("employer-key"))
    path = tmp_path / "employer.pem"
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    stored = run("import-cert", str(path), "--token-label", ukey.label)
    assert stored.exit_code == 0, stored.output
    return account.username


def test_login_prints_an_api_token(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    tmp_path: Path,
) -> None:
    username = _ukey_with_certificate(app, run, ukey, ukey_token, make_employer, tmp_path)
    result = run("login", "--url", served, "--token-label", ukey.label)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert f"signed in as {username}" in result.stderr
    request = urllib.request.Request(  # noqa: S310  (loopback)
        f"{served}/api/v1/applications", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  (loopback)
        assert response.status == 200


def test_login_completes_a_browser_challenge(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    tmp_path: Path,
) -> None:
    username = _ukey_with_certificate(app, run, ukey, ukey_token, make_employer, tmp_path)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(f"{served}/auth/certificate", timeout=10) as page:
        match = NONCE.search(page.read().decode())
    assert match
    result = run(
        "login", "--url", served, "--challenge", match.group(1), "--token-label", ukey.label
    )
    assert result.exit_code == 0, result.output
    assert f"the browser showing the challenge is now {username}" in result.output
    with browser.open(f"{served}/auth/certificate", timeout=10) as home:
        assert home.url.endswith("/auth/home")
        assert username in home.read().decode()
    # The same challenge again: refused, with the service's message.
    again = run(
        "login", "--url", served, "--challenge", match.group(1), "--token-label", ukey.label
    )
    assert again.exit_code == 1
    assert "already used" in again.output


def test_login_without_a_stored_certificate_says_what_to_do(
    served: str, run: ClientRun, ukey: UKey
) -> None:
    assert run("keygen", "--token-label", ukey.label, "--csr", "-").exit_code == 0
    result = run("login", "--url", served, "--token-label", ukey.label)
    assert result.exit_code == 1
    assert "no certificate is stored beside key 'employer-key'" in result.output


def test_login_to_an_unreachable_service(run: ClientRun, ukey: UKey) -> None:
    from tests.conftest import free_port

    assert run("keygen", "--token-label", ukey.label, "--csr", "-").exit_code == 0
    result = run("login", "--url", f"http://127.0.0.1:{free_port()}", "--token-label", ukey.label)
    assert result.exit_code == 1
    assert "cannot reach" in result.output


def test_bind_a_tax_certificate_whose_key_is_on_the_token_then_log_in_with_it(
    app: Flask,
    served: str,
    run: ClientRun,
    ukey: UKey,
    ukey_token: Token,
    make_employer: MakeEmployer,  # noqa: F811
    crl_server: CrlServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    account = make_employer()
    assert run("keygen", "--token-label", ukey.label, "--csr", "-").exit_code == 0
    tax = TaxCA(crl_base_url=crl_server.base_url)
    crl_server.publish("/root.crl", tax.crl(issuer="root"))
    crl_server.publish("/intermediate.crl", tax.crl())
    with app.app_context():
        for pem, url in (
            (tax.root_pem, tax.root_crl_url),
            (tax.intermediate_pem, tax.intermediate_crl_url),
        ):
            add_trust_anchor(actor="tests", purpose=TrustPurpose.TAX, data=pem, crl_url=url)
        db.session.commit()
    certificate, _ = tax.issue(
        account.number, public_key=ukey_token.private_key("employer-key").public_key()
    )
    path = tmp_path / "tax.pem"
    path.write_bytes(certificate.public_bytes(Encoding.PEM))
    api_token = token_of(request_token(app.test_client(), account.username, account.password))

    no_way = run("bind", "--url", served, "--certificate", str(path), "--token-label", ukey.label)
    assert no_way.exit_code == 2
    assert "give --challenge" in no_way.output
    bound = run(
        "bind",
        "--url",
        served,
        "--certificate",
        str(path),
        "--token-label",
        ukey.label,
        env={"CA_API_TOKEN": api_token},
    )
    assert bound.exit_code == 0, bound.output
    assert f"serial {certificate.serial_number:x}" in bound.output
    again = run(
        "bind",
        "--url",
        served,
        "--certificate",
        str(path),
        "--token-label",
        ukey.label,
        env={"CA_API_TOKEN": api_token},
    )
    assert again.exit_code == 1
    assert "already bound to your account" in again.output

    login = run("login", "--url", served, "--certificate", str(path), "--token-label", ukey.label)
    assert login.exit_code == 0, login.output
    assert f"signed in as {account.username}" in login.stderr
