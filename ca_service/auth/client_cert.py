"""The TLS client certificate of a request, as the TLS layer in front of the app verified it.

Two places can terminate TLS. The WSGI server itself (`ca-service serve --tls`, Werkzeug's dev
server with an ssl_context, mod_wsgi) puts the certificate in ``SSL_CLIENT_CERT``, where no
client can write: request headers only ever reach the environ as ``HTTP_*``. A reverse proxy
(nginx) passes it in a header, which anyone can send; it is believed only from the addresses in
``TRUSTED_PROXIES``. Either way the app still verifies the certificate itself
(`ca_service.auth.verification`): the TLS layer vouches only for possession of the key.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Mapping
from itertools import count
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from ca_service.auth.verification import CertificateRefused, Refusal, parse_chain
from ca_service.config import Settings, trusted_proxy_networks

__all__ = ["header_environ_key", "presented_chain"]

log = logging.getLogger(__name__)

SERVER_CERT = "SSL_CLIENT_CERT"
SERVER_CHAIN_PREFIX = "SSL_CLIENT_CERT_CHAIN_"  # mod_ssl / mod_wsgi: _0, _1, ... above the leaf

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def header_environ_key(header: str) -> str:
    """The WSGI environ key of a request header, e.g. ``HTTP_X_SSL_CLIENT_CERT``."""
    return "HTTP_" + header.strip().upper().replace("-", "_")


@functools.lru_cache(maxsize=8)
def _networks(value: str) -> tuple[Network, ...]:
    # Parsed once per distinct setting, not on every request (the setting was validated at
    # start-up, so this cannot raise here).
    return trusted_proxy_networks(value)


def _from_trusted_proxy(remote_addr: object, settings: Settings) -> bool:
    networks = _networks(str(settings["TRUSTED_PROXIES"]))
    if not networks or not isinstance(remote_addr, str):
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:  # a Unix socket or a server that sets no address: not a proxy we know
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # "::ffff:10.0.0.5" from a dual-stack socket
    return any(a in network for a in candidates for network in networks)


def _read(text: str, where: LazyString) -> list[x509.Certificate]:
    # ``where`` is worded only for a refusal: every TLS sign-in reads its certificate here.
    try:
        return parse_chain(text)
    except CertificateRefused:
        raise CertificateRefused(
            Refusal.UNREADABLE,
            _(
                "The client certificate %(where)s is not a readable X.509 certificate; check "
                "the TLS server's or proxy's configuration.",
                where=str(where),
            ),
        ) from None


def _server_chain(environ: Mapping[str, Any]) -> list[x509.Certificate]:
    chain = _read(
        str(environ[SERVER_CERT]),
        _l("that the TLS server passed on (%(name)s)", name=SERVER_CERT),
    )
    for index in count():
        extra = environ.get(f"{SERVER_CHAIN_PREFIX}{index}")
        if not extra or not str(extra).strip():
            break
        chain += _read(
            str(extra),
            _l("in chain entry %(name)s", name=f"{SERVER_CHAIN_PREFIX}{index}"),
        )
    return chain


def presented_chain(environ: Mapping[str, Any], settings: Settings) -> list[x509.Certificate]:
    """The client certificate the TLS layer verified, leaf first (then any chain certificates
    the server exposes), or [] when none was presented.

    :raises CertificateRefused: (unreadable) when a certificate is present but cannot be read.
    """
    header = str(settings["CLIENT_CERT_HEADER"])
    header_value = str(environ.get(header_environ_key(header)) or "").strip()
    if header_value and not _from_trusted_proxy(environ.get("REMOTE_ADDR"), settings):
        # Anyone can send the header; only a configured proxy's copy is believed. The value is
        # not logged: it is whatever the client chose to send.
        log.info(
            "ignored the %s header from %s, which is not in TRUSTED_PROXIES",
            header,
            environ.get("REMOTE_ADDR") or "an unknown address",
        )
        header_value = ""
    if str(environ.get(SERVER_CERT) or "").strip():
        return _server_chain(environ)
    if header_value:
        # nginx's $ssl_client_escaped_cert: the PEM, URL-escaped. ``unquote`` and not
        # ``unquote_plus``: a literal "+" is base64, never an escaped space.
        return _read(
            unquote(header_value),
            _l("in the %(header)s header from the proxy", header=header),
        )
    return []
