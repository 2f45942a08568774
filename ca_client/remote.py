"""Talking to the CA service: signed challenges for certificate login and tax-certificate
binding (JSON API v1).

The signed message format is defined here, once, and the service imports it: what the client
signs and what the server verifies cannot drift apart.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client.errors import ClientError
from ca_client.keys import csr_hash

PURPOSES = ("login", "bind")
_TIMEOUT = 30


def signed_message(purpose: str, nonce: str) -> bytes:
    """The bytes a certificate's key signs to answer a challenge: domain-separated, so the
    same key can never be made to sign a document or another purpose's challenge with them."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown challenge purpose {purpose!r}")
    return f"ca-service {purpose} challenge: {nonce}".encode()


def sign_challenge(private_key: Any, purpose: str, nonce: str) -> bytes:
    """Sign a challenge with an EC or RSA key (software, or on a token through hsm's signers):
    ECDSA, or RSA PKCS#1 v1.5, with the hash the key's CSRs use."""
    message = signed_message(purpose, nonce)
    algorithm = csr_hash(private_key.public_key())
    if isinstance(private_key, rsa.RSAPrivateKey):
        return bytes(private_key.sign(message, padding.PKCS1v15(), algorithm))
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return bytes(private_key.sign(message, ec.ECDSA(algorithm)))
    raise ClientError("only EC and RSA keys can answer a challenge")


@dataclass(frozen=True)
class Service:
    """The CA service at ``base_url`` (``https://ca.example`` or ``http://127.0.0.1:5000``)."""

    base_url: str
    cafile: str | None = None
    bearer: str | None = None

    def _context(self) -> ssl.SSLContext | None:
        if not self.base_url.startswith("https://"):
            return None
        return ssl.create_default_context(cafile=self.cafile)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST JSON; returns (status, JSON answer).

        :raises ClientError: the service cannot be reached, or answered with an error (its
            message is the error's).
        """
        return self._call("POST", path, body)

    def get(self, path: str) -> dict[str, Any]:
        """GET a JSON document.

        :raises ClientError: as ``post``.
        """
        return self._call("GET", path, None)[1]

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        if not self.base_url.startswith(("http://", "https://")):
            raise ClientError(f"--url must start with http:// or https:// (got {self.base_url})")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        request = urllib.request.Request(  # noqa: S310  (http/https checked above)
            self.base_url.rstrip("/") + path,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=_TIMEOUT, context=self._context()
            ) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ClientError(_error_message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.base_url}: {reason}") from None
        except ValueError:  # not JSON: a proxy's page, or not the CA service at all
            raise ClientError(
                f"{self.base_url} did not answer {method} {path} with JSON: is --url the CA "
                "service?"
            ) from None
        if not isinstance(answer, dict):
            raise ClientError(f"{self.base_url} answered {method} {path} with unexpected JSON")
        return int(response.status), answer

    def new_challenge(self, purpose: str) -> str:
        _, answer = self.post("/api/v1/auth/challenges", {"purpose": purpose})
        return str(answer["challenge"])


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return f"{error['message']} ({exc.code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"the service answered {exc.code} {exc.reason}"


def answer_body(nonce: str, chain: Sequence[x509.Certificate], signature: bytes) -> dict[str, str]:
    return {
        "challenge": nonce,
        "certificate": "".join(c.public_bytes(Encoding.PEM).decode() for c in chain),
        "signature": base64.b64encode(signature).decode(),
    }
