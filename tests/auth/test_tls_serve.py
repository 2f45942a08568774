"""`ca-service serve --tls` end to end: real processes, real TLS handshakes, and our own
employer certificates (issued by the HSM-backed CA) as TLS client certificates; plus the
reverse-proxy header, believed only from TRUSTED_PROXIES."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from flask import Flask

from ca_service.authorities.service import (
    ISSUING_SLUG,
    ROOT_SLUG,
    current_certificate,
    get_authority,
    load_certificate,
)
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import add_trust_anchor, set_anchor_enabled
from ca_service.db import db
from ca_service.serving import CLIENT_CA_BUNDLE, client_ca_certificates, write_client_ca_bundle
from tests.auth.certificates import (  # noqa: F401  (fixtures used by name)
    AgencyCertificate,
    IssueFor,
    agency_certificate,
)
from tests.auth.flows import CSRF
from tests.auth.tls_fixtures import (
    SERVE,
    KeyPair,
    Served,
    ServerTls,
    http_call,
    https_call,
    key_pair,
    serve_environment,
    serve_process,
    write_key,
)
from tests.binding.tax_ca import TaxCA
from tests.conftest import Baseline, CliInvoke
from tests.hsm.support import issue_certificate
from tests.issuance.conftest import make_employer  # noqa: F401

TLS_TOKEN = "/api/v1/auth/tls-token"


@pytest.fixture(scope="module")
def tls_server(
    app_overrides: dict[str, Any],
    pki_baseline: Baseline,
    server_tls: ServerTls,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """One `ca-service serve --tls` (two workers) for the module: it reads every row from the
    database per request, so each test's own employers and certificates are seen."""
    log = tmp_path_factory.mktemp("tls-server") / "server.log"
    with serve_process(app_overrides, log, tls=server_tls, workers=2) as served:
        yield served


def pem_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


def identity_of(issued: AgencyCertificate, directory: Path) -> KeyPair:
    return key_pair(directory, "employer", issued.key, [issued.certificate])


def untrusted_identity(directory: Path) -> KeyPair:
    """A client certificate from a throwaway CA that neither we nor a tax anchor trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key_pair(directory, "untrusted", key, [issue_certificate(key.public_key())])


def test_the_tls_client_certificate_gets_an_api_token(
    tls_server: Served,
    server_tls: ServerTls,
    agency_certificate: IssueFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    issued = agency_certificate()
    identity = identity_of(issued, tmp_path)
    reply = https_call(
        tls_server.port, "POST", TLS_TOKEN, context=server_tls.client_context(identity)
    )
    assert reply.status == 201, reply.body
    body = reply.json()
    assert body["token_type"] == "Bearer"
    assert body["username"] == issued.account.username
    # The token works on a later connection that presents no certificate at all.
    listing = https_call(
        tls_server.port,
        "GET",
        "/api/v1/applications",
        context=server_tls.client_context(),
        headers={"Authorization": f"Bearer {body['token']}"},
    )
    assert listing.status == 200, listing.body

    # The same call without a client certificate: the handshake succeeds (a certificate is
    # asked for, not required) and the API says none was presented.
    anonymous = https_call(tls_server.port, "POST", TLS_TOKEN, context=server_tls.client_context())
    assert anonymous.status == 401, anonymous.body
    assert "No TLS client certificate" in anonymous.json()["error"]["message"]


def test_a_certificate_from_an_untrusted_ca_reaches_the_app_and_hears_why(
    tls_server: Served,
    server_tls: ServerTls,
    tmp_path: Path,
) -> None:
    # Any certificate whose key the client proves to hold completes the handshake; one from a
    # CA neither we nor a tax anchor are is refused by the app, which names the issuer.
    context = server_tls.client_context(untrusted_identity(tmp_path))
    reply = https_call(tls_server.port, "POST", TLS_TOKEN, context=context)
    assert reply.status == 403, reply.body
    error = reply.json()["error"]
    assert error["code"] == "untrusted_issuer"
    assert "CN=Throwaway CA" in error["message"]
    assert "not a certificate authority trusted for signing in" in error["message"]


def test_a_certificate_without_client_auth_reaches_the_app_and_hears_why(
    app: Flask,
    tls_server: Served,
    server_tls: ServerTls,
    tmp_path: Path,
) -> None:
    # OpenSSL alone would end this handshake with "unsupported certificate purpose".
    identity = _agency_certificate(
        app, tmp_path, expired=False, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    reply = https_call(
        tls_server.port, "POST", TLS_TOKEN, context=server_tls.client_context(identity)
    )
    assert reply.status == 403, reply.body
    error = reply.json()["error"]
    assert error["code"] == "wrong_key_usage"
    assert "lacks clientAuth" in error["message"]


def test_curl_gets_an_api_token_with_the_certificate(
    tls_server: Served,
    server_tls: ServerTls,
    agency_certificate: IssueFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    issued = agency_certificate()
    identity = identity_of(issued, tmp_path)
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--cert",
            str(identity.cert_file),
            "--key",
            str(identity.key_file),
            "--cacert",
            str(server_tls.ca_file),
            "--request",
            "POST",
            "--write-out",
            "\n%{http_code}",
            f"{tls_server.base_url}{TLS_TOKEN}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "201", body
    assert json.loads(body)["username"] == issued.account.username


def test_the_browser_signs_in_with_its_certificate_over_tls(
    tls_server: Served,
    server_tls: ServerTls,
    agency_certificate: IssueFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    issued = agency_certificate()
    context = server_tls.client_context(identity_of(issued, tmp_path))
    page = https_call(tls_server.port, "GET", "/auth/certificate", context=context)
    assert page.status == 200, page.body
    match = CSRF.search(page.body.decode())
    assert match, page.body
    reply = https_call(
        tls_server.port,
        "POST",
        "/auth/certificate/tls",
        context=context,
        headers={
            "Cookie": "; ".join(page.cookies),
            "Content-Type": "application/x-www-form-urlencoded",
            # Over https Flask-WTF also checks that the form came from this site, as a
            # browser's Referer shows.
            "Referer": f"{tls_server.base_url}/auth/certificate",
        },
        body=f"csrf_token={quote(match.group(1), safe='')}".encode(),
    )
    assert reply.status == 302, reply.body
    assert urlsplit(reply.headers["Location"]).path == "/auth/home"
    home = https_call(
        tls_server.port,
        "GET",
        "/auth/home",
        context=server_tls.client_context(),  # the session cookie alone now
        headers={"Cookie": "; ".join(reply.cookies)},
    )
    assert home.status == 200, home.body
    assert issued.account.username in home.body.decode()


def forged_header(issued: AgencyCertificate) -> dict[str, str]:
    """The header nginx would set, with a real, valid employer certificate in it."""
    return {"X-SSL-Client-Cert": quote(issued.pem, safe="")}


def test_a_client_certificate_header_from_anyone_is_ignored(
    served: str,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    # The shared `served` app trusts no proxy: a client that sends the header itself (here
    # straight over plain HTTP) gains nothing, however valid the certificate in it.
    port = urlsplit(served).port
    assert port is not None
    reply = http_call(port, "POST", TLS_TOKEN, headers=forged_header(agency_certificate()))
    assert reply.status == 401, reply.body


def test_the_header_from_a_trusted_proxy_is_believed(
    app_overrides: dict[str, Any],
    agency_certificate: IssueFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    issued = agency_certificate()
    untrusted = untrusted_identity(tmp_path).cert_file.read_text()
    with serve_process(
        app_overrides, tmp_path / "server.log", environ={"CA_TRUSTED_PROXIES": "127.0.0.1"}
    ) as proxied:
        reply = http_call(proxied.port, "POST", TLS_TOKEN, headers=forged_header(issued))
        assert reply.status == 201, reply.body
        assert reply.json()["username"] == issued.account.username
        # Believed means verified like any other: the app itself refuses what TLS would have.
        refused = http_call(
            proxied.port,
            "POST",
            TLS_TOKEN,
            headers={"X-SSL-Client-Cert": quote(untrusted, safe="")},
        )
        assert refused.status == 403, refused.body
        assert refused.json()["error"]["code"] == "untrusted_issuer"
        garbage = http_call(
            proxied.port, "POST", TLS_TOKEN, headers={"X-SSL-Client-Cert": "not%20a%20cert"}
        )
        assert garbage.status == 403, garbage.body
        assert garbage.json()["error"]["code"] == "unreadable"
    assert re.search(r"Listening at: http://127\.0\.0\.1:\d+", proxied.log.read_text())


def test_forwarded_for_does_not_make_a_client_a_trusted_proxy(
    app_overrides: dict[str, Any],
    agency_certificate: IssueFor,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Only the connection's peer can be the trusted proxy: the event-loop worker (uvicorn)
    # must not take the client's address from X-Forwarded-For, even from loopback.
    issued = agency_certificate()
    with serve_process(
        app_overrides, tmp_path / "server.log", environ={"CA_TRUSTED_PROXIES": "10.9.9.9"}
    ) as proxied:
        headers = {
            **forged_header(issued),
            "X-Forwarded-For": "10.9.9.9",
            "X-Real-IP": "10.9.9.9",
            "Forwarded": "for=10.9.9.9",
        }
        reply = http_call(proxied.port, "POST", TLS_TOKEN, headers=headers)
        assert reply.status == 401, reply.body
    assert "Using worker: EventLoopWorker" in proxied.log.read_text()


def test_the_generated_bundle_holds_our_cas_and_the_enabled_tax_anchors(
    app: Flask, tmp_path: Path
) -> None:
    tax, retired = TaxCA(), TaxCA("Retired Tax Bureau")
    with app.app_context():
        for certificate in (tax.root, tax.intermediate):
            add_trust_anchor(actor="tests", purpose=TrustPurpose.TAX, data=pem_of(certificate))
        old = add_trust_anchor(actor="tests", purpose=TrustPurpose.TAX, data=pem_of(retired.root))
        set_anchor_enabled(actor="tests", anchor_id=old.id, enabled=False)
        # Seal anchors vouch for document seals, not for signing in.
        add_trust_anchor(
            actor="tests", purpose=TrustPurpose.SEAL, data=pem_of(retired.intermediate)
        )
        db.session.commit()
        ours = [
            load_certificate(current_certificate(get_authority(slug)))
            for slug in (ROOT_SLUG, ISSUING_SLUG)
        ]
        certificates = client_ca_certificates()
    assert certificates[:2] == ours
    assert sorted(certificates[2:], key=str) == sorted([tax.root, tax.intermediate], key=str)
    bundle = tmp_path / CLIENT_CA_BUNDLE
    write_client_ca_bundle(bundle, certificates)
    assert x509.load_pem_x509_certificates(bundle.read_bytes()) == certificates
    assert [p.name for p in tmp_path.iterdir()] == [CLIENT_CA_BUNDLE]  # no temporary left


def test_tls_needs_a_certificate_and_a_key(
    cli: CliInvoke,
    server_tls: ServerTls,
) -> None:
    result = cli("serve", "--tls", "--tls-cert", str(server_tls.server.cert_file))
    assert result.exit_code == 2
    assert "--tls needs both --tls-cert FILE and --tls-key FILE" in result.output
    result = cli("serve", "--tls-cert", str(server_tls.server.cert_file))
    assert result.exit_code == 2
    assert "take effect with --tls" in result.output


def test_a_key_that_does_not_match_the_certificate_fails_at_start_up(
    app_overrides: dict[str, Any],
    pki_baseline: Baseline,
    server_tls: ServerTls,
    tmp_path: Path,
) -> None:
    wrong_key = write_key(tmp_path / "wrong.key", ec.generate_private_key(ec.SECP256R1()))
    result = subprocess.run(
        [
            *SERVE,
            "--port",
            "1",  # never bound: the files are checked before gunicorn starts
            "--tls",
            "--tls-cert",
            str(server_tls.server.cert_file),
            "--tls-key",
            str(wrong_key),
        ],
        env=serve_environment(app_overrides),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(
        f"error: cannot load the TLS certificate {server_tls.server.cert_file}"
    )
    assert "Traceback" not in result.stderr
    assert "Starting gunicorn" not in result.stdout + result.stderr


def _agency_certificate(
    app: Flask,
    directory: Path,
    *,
    expired: bool = True,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
) -> KeyPair:
    """A certificate our issuing CA signed (in the HSM): by default one that expired
    yesterday; ``usage`` its only extended key usage."""
    from ca_service.authorities import profiles
    from ca_service.authorities.signing import hash_for, new_serial
    from ca_service.hsm_access import app_token
    from hsm import KeyAlgorithm

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=366) if expired else now - dt.timedelta(minutes=5)
    end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=30)
    with app.app_context():
        issuer = get_authority(ISSUING_SLUG)
        issuer_cert = load_certificate(current_certificate(issuer))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(
                profiles.employer_subject(
                    country="CN", legal_name="Expired Co., Ltd.", registration_number="X"
                )
            )
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .serial_number(new_serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .sign(
                app_token().private_key(issuer.key_label),
                hash_for(KeyAlgorithm(issuer.key_algorithm)),
            )
        )
    return key_pair(directory, "agency", key, [certificate])


def test_an_expired_certificate_reaches_the_app_and_hears_the_ways_back_in(
    app: Flask,
    tls_server: Served,
    server_tls: ServerTls,
    tmp_path: Path,
) -> None:
    # The TLS layer does not judge validity in time (the app does): the handshake completes
    # and the answer names the password + SMS and tax-certificate ways back in.
    identity = _agency_certificate(app, tmp_path)
    reply = https_call(
        tls_server.port, "POST", TLS_TOKEN, context=server_tls.client_context(identity)
    )
    assert reply.status == 403, reply.body
    error = reply.json()["error"]
    assert error["code"] == "expired"
    assert "password and an SMS code" in error["message"]
    assert "tax-bureau certificate" in error["message"]
