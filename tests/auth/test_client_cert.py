"""Where the client certificate of a request comes from: the TLS server's SSL_CLIENT_CERT, or a
trusted proxy's header (URL-escaped PEM) and never anyone else's."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from ca_service.auth.client_cert import presented_chain
from ca_service.auth.verification import CertificateRefused, Refusal
from ca_service.config import Settings, load_settings
from tests.hsm.support import issue_certificate

HEADER_KEY = "HTTP_X_SSL_CLIENT_CERT"  # the WSGI key of the default CLIENT_CERT_HEADER
LOGGER = "ca_service.auth.client_cert"


def settings(trusted_proxies: str = "", **overrides: str) -> Settings:
    return load_settings(environ={}, overrides={"TRUSTED_PROXIES": trusted_proxies, **overrides})


def certificate(name: str) -> x509.Certificate:
    return issue_certificate(ec.generate_private_key(ec.SECP256R1()).public_key(), name)


@pytest.fixture(scope="module")
def leaf() -> x509.Certificate:
    return certificate("Employer Ltd")


@pytest.fixture(scope="module")
def other() -> x509.Certificate:
    return certificate("Someone Else Ltd")


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def escaped(cert: x509.Certificate) -> str:
    """What nginx sends as $ssl_client_escaped_cert: the PEM, URL-escaped."""
    return quote(pem(cert), safe="")


def test_the_tls_servers_certificate_is_read_with_its_chain(
    leaf: x509.Certificate, other: x509.Certificate
) -> None:
    environ = {"SSL_CLIENT_CERT": pem(leaf), "REMOTE_ADDR": "203.0.113.7"}
    assert presented_chain(environ, settings()) == [leaf]
    # mod_ssl/mod_wsgi expose the certificates above the leaf as SSL_CLIENT_CERT_CHAIN_<n>.
    environ |= {"SSL_CLIENT_CERT_CHAIN_0": pem(other), "SSL_CLIENT_CERT_CHAIN_1": ""}
    assert presented_chain(environ, settings()) == [leaf, other]


@pytest.mark.parametrize(
    ("trusted", "remote_addr"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("10.0.0.5, 192.168.1.0/24", "192.168.1.77"),
        ("2001:db8::/32", "2001:db8::1"),
        ("::1", "::1"),
        ("10.0.0.5", "::ffff:10.0.0.5"),  # an IPv4 proxy seen through a dual-stack socket
    ],
)
def test_the_header_is_believed_from_a_trusted_proxy(
    leaf: x509.Certificate, trusted: str, remote_addr: str
) -> None:
    environ = {HEADER_KEY: escaped(leaf), "REMOTE_ADDR": remote_addr}
    assert presented_chain(environ, settings(trusted)) == [leaf]


@pytest.mark.parametrize(
    ("trusted", "remote_addr"),
    [
        ("", "127.0.0.1"),  # no proxy configured: the header is never believed
        ("10.0.0.5", "10.0.0.6"),
        ("192.168.1.0/24", "192.168.2.1"),
        ("2001:db8::/32", "2001:db9::1"),
        ("10.0.0.5", ""),
        ("10.0.0.5", None),
        ("10.0.0.5", "unix:/run/ca.sock"),
    ],
)
def test_the_header_from_anyone_else_is_ignored_and_logged_without_its_content(
    leaf: x509.Certificate,
    caplog: pytest.LogCaptureFixture,
    trusted: str,
    remote_addr: str | None,
) -> None:
    environ: dict[str, Any] = {HEADER_KEY: escaped(leaf)}
    if remote_addr is not None:
        environ["REMOTE_ADDR"] = remote_addr
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert presented_chain(environ, settings(trusted)) == []
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 1
    assert "X-SSL-Client-Cert" in messages[0]
    assert "ignored" in messages[0]
    body = pem(leaf).splitlines()[1]
    assert body[:20] not in messages[0]
    assert quote(body[:20], safe="") not in messages[0]


def test_a_forged_header_does_not_replace_the_tls_servers_certificate(
    leaf: x509.Certificate, other: x509.Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"SSL_CLIENT_CERT": pem(leaf), HEADER_KEY: escaped(other), "REMOTE_ADDR": "10.9.9.9"}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert presented_chain(environ, settings("10.0.0.5")) == [leaf]
    assert any("ignored" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_escaped_pem_is_decoded_however_much_the_proxy_escaped(leaf: x509.Certificate) -> None:
    config = settings("10.0.0.5")
    for value in (
        escaped(leaf),
        quote(pem(leaf), safe="/+="),  # "+" left as is must stay "+" (base64), not a space
        pem(leaf).replace("\n", "%0A"),
    ):
        environ = {HEADER_KEY: value, "REMOTE_ADDR": "10.0.0.5"}
        assert presented_chain(environ, config) == [leaf]


def test_the_header_name_is_configurable(leaf: x509.Certificate) -> None:
    config = settings("10.0.0.5", CLIENT_CERT_HEADER="X-Client-Certificate")
    ours = {"HTTP_X_CLIENT_CERTIFICATE": escaped(leaf), "REMOTE_ADDR": "10.0.0.5"}
    assert presented_chain(ours, config) == [leaf]
    default_name = {HEADER_KEY: escaped(leaf), "REMOTE_ADDR": "10.0.0.5"}
    assert presented_chain(default_name, config) == []


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"SSL_CLIENT_CERT": "garbage"}, "SSL_CLIENT_CERT"),
        (
            {"SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "SSL_CLIENT_CERT",
        ),
        ({HEADER_KEY: "not%20a%20certificate", "REMOTE_ADDR": "10.0.0.5"}, "X-SSL-Client-Cert"),
    ],
)
def test_an_unreadable_certificate_is_refused_with_a_clear_message(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(CertificateRefused) as refused:
        presented_chain(environ, settings("10.0.0.5"))
    assert refused.value.refusal is Refusal.UNREADABLE
    assert refused.value.status_code == 403
    assert named in refused.value.message
    assert "not a readable X.509 certificate" in refused.value.message


def test_an_unreadable_chain_entry_is_refused(leaf: x509.Certificate) -> None:
    environ = {"SSL_CLIENT_CERT": pem(leaf), "SSL_CLIENT_CERT_CHAIN_0": "garbage"}
    with pytest.raises(CertificateRefused) as refused:
        presented_chain(environ, settings())
    assert refused.value.refusal is Refusal.UNREADABLE
    assert "SSL_CLIENT_CERT_CHAIN_0" in refused.value.message


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"REMOTE_ADDR": "10.0.0.5"},
        {"SSL_CLIENT_CERT": "", HEADER_KEY: "", "REMOTE_ADDR": "10.0.0.5"},  # nginx: no cert
        {"SSL_CLIENT_CERT": "  \n", "REMOTE_ADDR": "10.0.0.5"},
    ],
)
def test_no_certificate_is_an_empty_chain(environ: dict[str, str]) -> None:
    assert presented_chain(environ, settings("10.0.0.5")) == []
