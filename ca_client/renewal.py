"""Renewal (re-key) of the employer's certificate through the CA service's JSON API: its
renewal information (the suggested window, after RFC 9773), a new key beside the old one (on
the same token, or in a new file), and the new certificate written beside that key.

What is named here is the rule the README documents: a new key is called after the old one
and the day it was made (``employer-key`` -> ``employer-key-20261206``, ``key.p8`` ->
``key-20261206.p8``), the certificate file after the new key (``<key>.cert.pem``).
"""

from __future__ import annotations

import abc
import datetime as dt
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client import keys, remote
from ca_client.errors import ClientError, KeyFileUnreadable
from hsm import KeyAlgorithm, KeyNotFound, Token

# A date suffix of an earlier renewal, replaced rather than stacked on the next one.
_DATE_SUFFIX = re.compile(r"-\d{8}$")


@dataclass(frozen=True)
class RenewalInfo:
    """``GET /api/v1/certificates/<serial>/renewal-info``: where a certificate stands."""

    serial: str
    state: str  # not_due, due, grace, past_grace, pending, renewed, revoked
    not_after: dt.datetime
    window_start: dt.datetime
    renewable_until: dt.datetime
    renewed_by: str | None
    explanation_url: str
    # A renewal of it was approved but got no certificate: renewing again resumes it.
    resumable: bool = False

    @property
    def clock_state(self) -> str:
        """The state, where a resumable renewal stands in the way, by the clock alone."""
        if self.state != "pending" or not self.resumable:
            return self.state
        now = dt.datetime.now(dt.UTC)
        if now < self.not_after:
            return "due"
        return "grace" if now < self.renewable_until else "past_grace"

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> RenewalInfo:
        """:raises ClientError: the answer is not the service's renewal information."""
        try:
            return cls(
                serial=str(answer["serial"]),
                state=str(answer["state"]),
                not_after=_time(answer["not_after"]),
                window_start=_time(answer["suggested_window"]["start"]),
                renewable_until=_time(answer["renewable_until"]),
                renewed_by=str(answer["renewed_by"]) if answer.get("renewed_by") else None,
                explanation_url=str(answer.get("explanation_url") or ""),
                resumable=answer.get("resumable") is True,
            )
        except (KeyError, TypeError, ValueError):
            raise ClientError(
                "the service's renewal information is not in the form expected"
            ) from None


def _time(value: Any) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def serial_of(certificate: x509.Certificate) -> str:
    """A serial as the service writes it (lower-case hex)."""
    return format(certificate.serial_number, "x")


def renewal_info(service: remote.Service, serial: str) -> RenewalInfo:
    """The public renewal information of the certificate ``serial``."""
    return RenewalInfo.from_json(service.get(f"/api/v1/certificates/{serial}/renewal-info"))


def day(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def certificate_login(
    service: remote.Service, signer: Any, chain: Sequence[x509.Certificate]
) -> str:
    """Sign a new login challenge with the certificate's key; returns the API bearer token."""
    nonce = service.new_challenge("login")
    signature = remote.sign_challenge(signer, "login", nonce)
    _, answer = service.post(
        "/api/v1/auth/certificate", remote.answer_body(nonce, chain, signature)
    )
    token = answer.get("token")
    if not isinstance(token, str) or not token:
        raise ClientError("the service signed in no API client: it gave no token")
    return token


@dataclass(frozen=True)
class Issued:
    """A renewal issued at once."""

    certificate: x509.Certificate
    intermediates: list[x509.Certificate]  # the chain up to, not including, the root
    application_id: int


@dataclass(frozen=True)
class Pending:
    """A renewal that waits for an officer, or for documents the employer must replace."""

    application_id: int
    status: str
    reasons: list[str]


def request_renewal(
    service: remote.Service,
    serial: str,
    csr: x509.CertificateSigningRequest,
    *,
    supersede: bool,
    contacts_confirmed: bool,
) -> Issued | Pending:
    """``POST /api/v1/certificates/<serial>/renewal`` with the new key's CSR.

    :raises ClientError: the service refused (its message), or answered something unexpected.
    """
    status, answer = service.post(
        f"/api/v1/certificates/{serial}/renewal",
        {
            "csr_pem": csr.public_bytes(Encoding.PEM).decode("ascii"),
            "supersede": supersede,
            "contacts_confirmed": contacts_confirmed,
        },
    )
    try:
        application = answer["application"]
        application_id = int(application["id"])
        if status == 202:
            return Pending(
                application_id=application_id,
                status=str(application.get("status", "")),
                reasons=[str(reason) for reason in answer.get("reasons") or []],
            )
        certificate = x509.load_pem_x509_certificate(str(answer["certificate_pem"]).encode())
        chain = x509.load_pem_x509_certificates(str(answer["chain_pem"]).encode())
    except (KeyError, TypeError, ValueError):
        raise ClientError(
            f"the service answered the renewal with {status} in a form not expected"
        ) from None
    intermediates = [
        c
        for c in chain
        if c != certificate and c.subject != c.issuer  # not the root
    ]
    return Issued(certificate, intermediates, application_id)


def algorithm_of(public_key: CertificatePublicKeyTypes) -> KeyAlgorithm:
    """The client's key type for a certificate's public key.

    :raises ClientError: a type the client cannot make (then --algorithm chooses one).
    """
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ClientError(
            f"the certificate's key is a {type(public_key).__name__}: choose the new key's "
            "type with --algorithm"
        )
    name = keys.algorithm_of(public_key)
    for algorithm in keys.CLIENT_ALGORITHMS:
        if algorithm.value == name:
            return algorithm
    raise ClientError(
        f"the certificate's key is {name}, which ca-client does not make: choose the new key's "
        "type with --algorithm"
    )


def new_key_label(old_label: str, today: dt.date) -> str:
    """``employer-key`` -> ``employer-key-20261206`` (an earlier date suffix is replaced)."""
    return f"{_DATE_SUFFIX.sub('', old_label)}-{today:%Y%m%d}"


def new_key_file(old_path: Path, today: dt.date) -> Path:
    """``/x/key.p8`` -> ``/x/key-20261206.p8``: beside the old one (date suffix replaced)."""
    stem = _DATE_SUFFIX.sub("", old_path.stem)
    return old_path.with_name(f"{stem}-{today:%Y%m%d}{old_path.suffix}")


def certificate_file_beside(key_file: Path) -> Path:
    """``/x/key-20261206.p8`` -> ``/x/key-20261206.cert.pem``."""
    return key_file.with_name(f"{key_file.stem}.cert.pem")


def certificate_file_for_label(label: str, directory: Path) -> Path:
    """``<directory>/<label>.cert.pem``, with what a file name cannot hold replaced by ``_``."""
    return directory / (re.sub(r"[^A-Za-z0-9._-]", "_", label).lstrip(".") + ".cert.pem")


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, never replacing a file that exists.

    The bytes go to a temporary file in the same directory, which is then hard-linked to
    ``path``: the link fails if ``path`` exists (even if it appeared meanwhile), and a reader
    never sees a half-written certificate.

    :raises ClientError: ``path`` exists or cannot be written.
    """
    directory = path.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise ClientError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # a certificate is public
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)
    except FileExistsError:
        raise ClientError(f"{path} exists already: certificates are never overwritten") from None
    except OSError as exc:
        raise ClientError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


class NewKey(abc.ABC):
    """Where the renewal's new key pair is made (or found, left by an earlier attempt)."""

    name: str  # the key label, or the key file's path, for the certificate file's name

    @abc.abstractmethod
    def obtain(self, algorithm: KeyAlgorithm, notify: Callable[[str], None]) -> Any:
        """The new key's signer, made now, or reused when an earlier attempt left it."""

    @abc.abstractmethod
    def keep(self, certificate: x509.Certificate) -> None:
        """Keep the new certificate beside the key where the key's holder needs it."""

    @abc.abstractmethod
    def next_time(self, certificate_file: Path) -> str:
        """The options that name the new key (and certificate) for the next renewal."""

    @abc.abstractmethod
    def left_behind(self) -> str:
        """What a failed renewal leaves, and what to do with it."""

    @abc.abstractmethod
    def refuse_taken(self) -> None:
        """Before signing in: refuse a new key whose certificate exists already.

        :raises ClientError: the key already has a certificate.
        """


class TokenKey(NewKey):
    """A new key pair on the employer's token, beside the old one (its own label and ID)."""

    def __init__(self, token: Token, token_label: str, label: str) -> None:
        self.token = token
        self.token_label = token_label
        self.name = label

    def refuse_taken(self) -> None:
        try:
            stored = self.token.certificate(self.name)
        except KeyNotFound:
            return
        if stored is not None:
            raise ClientError(
                f"token {self.token_label!r} already holds key {self.name!r} with a "
                "certificate: choose another --new-key-label"
            )

    def obtain(self, algorithm: KeyAlgorithm, notify: Callable[[str], None]) -> Any:
        try:
            self.token.find_key(self.name)
        except KeyNotFound:
            signer = keys.generate_token_key(self.token, self.name, algorithm)
            notify(f"generated {algorithm.value} key {self.name!r} on token {self.token_label!r}")
            return signer
        notify(
            f"reusing key {self.name!r} on token {self.token_label!r}, left by an earlier "
            "renewal attempt"
        )
        return self.token.private_key(self.name)

    def keep(self, certificate: x509.Certificate) -> None:
        self.token.store_certificate(self.name, certificate.public_bytes(Encoding.DER))

    def next_time(self, certificate_file: Path) -> str:
        return f"--key-label {self.name} (its certificate is stored beside it)"

    def left_behind(self) -> str:
        return (
            f"the new key {self.name!r} stays on token {self.token_label!r}: `ca-client renew "
            f"--new-key-label {self.name}` uses it again, or delete it from the token"
        )


class FileKey(NewKey):
    """A new key in a new encrypted PKCS#8 file beside the old one."""

    def __init__(
        self, path: Path, passphrase: Callable[[], bytes], warn: Callable[[str], None]
    ) -> None:
        self.path = path
        self.name = str(path)
        self._passphrase = passphrase
        self._warn = warn

    def refuse_taken(self) -> None:
        return None  # the certificate file named after the key is checked by the caller

    def obtain(self, algorithm: KeyAlgorithm, notify: Callable[[str], None]) -> Any:
        if self.path.exists():
            key = keys.load_file_key(self.path, self._passphrase, self._warn)
            notify(f"reusing the key in {self.path}, left by an earlier renewal attempt")
            return key
        try:
            key = keys.generate_file_key(self.path, algorithm, self._passphrase())
        except OSError as exc:
            raise KeyFileUnreadable(f"cannot write {self.path}: {exc.strerror or exc}") from None
        notify(f"wrote the encrypted {algorithm.value} key to {self.path}")
        return key

    def keep(self, certificate: x509.Certificate) -> None:
        return None  # the certificate file beside it is all a key file's holder needs

    def next_time(self, certificate_file: Path) -> str:
        return f"--key-file {self.path} --certificate {certificate_file}"

    def left_behind(self) -> str:
        return (
            f"the new key file {self.path} stays: `ca-client renew --new-key-file "
            f"{self.path}` uses it again, or delete it"
        )
