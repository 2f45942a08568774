"""The CRLs of the tax bureau's CAs (the CRLs our own CAs publish are ``ca_service.revocation``'s):
checked against their anchor on arrival, fetched from where each CA publishes them (or uploaded
by a CA administrator), and consulted for every tax certificate that signs in or is bound
(``revocation_of``).

``revocation_of`` is on the sign-in path, so a lookup costs one small SELECT (which CRL is
stored; a sign-in reads it in the same query as the account and calls ``revocation_in_stored``)
and a dict lookup in a per-process cache of that CRL's revoked serials; a CRL's DER is parsed
once per process. When the stored CRL is missing or past its nextUpdate the CA's CRL is
fetched on the spot; if that fails, the stale CRL is still used for TAX_CRL_GRACE_HOURS, and
after that the CA's certificates are refused (fail closed) until a current CRL arrives.

A CRL only replaces the stored one when it is newer, so a lookup never goes back in time. CRLs
reissued before their nextUpdate (a fresh revocation) are seen once they are stored, so
`ca-service trust crl refresh` should run from cron (hourly, say).
"""

from __future__ import annotations

import datetime as dt
import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID
from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from sqlalchemy.orm import defer

from ca_service.audit.service import record_event
from ca_service.binding.models import TaxCrl, TrustAnchor, TrustPurpose
from ca_service.binding.service import Actor, acting, get_anchor
from ca_service.config import Settings
from ca_service.db import db
from ca_service.errors import CAError, Conflict, Forbidden, ValidationError
from ca_service.i18n import DEFAULT_LANGUAGE, format_utc_datetime

MAX_CRL_BYTES = 50 * 1024 * 1024
# A CRL's thisUpdate may be this far ahead of our clock (the CA's clock may run fast).
CLOCK_SKEW = dt.timedelta(minutes=5)
# After a failed fetch, this process does not try the same CA again for this long: a dead
# distribution point must not make every sign-in wait for the fetch timeout.
RETRY_AFTER = dt.timedelta(seconds=60)
# The audit actor of fetches that sign-ins make on their own.
FETCH_ACTOR = "crl-fetch"
_ERROR_LENGTH = 500  # TaxCrl.last_error
_CACHE_KEY = "tax_crl_cache"
# Critical CRL extensions we act on; any other critical one makes the CRL unusable (RFC 5280).
_UNDERSTOOD_CRITICAL = frozenset({ExtensionOID.ISSUING_DISTRIBUTION_POINT})
# No DSA: cryptography deprecates it (touching its types warns) and no tax CA signs CRLs with it;
# a DSA-signed CRL is refused as unusable, like any other key type not listed here.
_CRL_SIGNER_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


class CrlUnavailable(Forbidden):
    """A tax CA has no current CRL: its certificates are refused until it has one."""

    code = "crl_unavailable"


class CrlFetchFailed(CAError):
    """A CRL could not be downloaded, or what came back is not an acceptable CRL.

    ``message`` and ``reason`` are in the current request's language; ``lazy_reason`` is the
    reason translated again wherever it is shown (kept beyond the request by a failed
    lookup's retry state, which must not serve one user's language to another).
    """

    status_code = 502
    code = "crl_fetch_failed"

    def __init__(self, message: str, *, url: str, reason: str, lazy_reason: LazyString) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason
        self.lazy_reason = lazy_reason


class _InvalidCrl(ValidationError):
    """A CRL ``store_crl`` refuses; ``lazy`` is its message, translated when shown."""

    def __init__(self, message: LazyString) -> None:
        super().__init__(str(message))
        self.lazy = message


class _CrlConflict(Conflict):
    """Another CRL of the anchor was stored at the same moment; ``lazy`` as ``_InvalidCrl``."""

    def __init__(self, message: LazyString) -> None:
        super().__init__(str(message))
        self.lazy = message


def _when(moment: dt.datetime) -> LazyString:
    """``moment`` as the pages show it (followed by "UTC" in the messages), formatted in the
    language of whoever reads the message it is put in."""
    return LazyString(format_utc_datetime, moment)


@dataclass(frozen=True)
class RevokedEntry:
    """A certificate listed on its CA's CRL."""

    serial: int
    revoked_at: dt.datetime
    # The RFC 5280 reason name ("keyCompromise", "certificateHold" …); None when not given.
    reason: str | None


@dataclass(frozen=True)
class RefreshResult:
    """What ``refresh_all`` did for one anchor: fetched, failed (``error``) or skipped
    (no CRL URL set: its CRLs are uploaded by hand)."""

    anchor_id: int
    subject: str
    url: str | None
    crl: TaxCrl | None
    error: str | None

    @property
    def outcome(self) -> str:
        """failed, skipped or fetched (CLI output and log words, not translated)."""
        if self.error is not None:
            return "failed"
        return "skipped" if self.url is None else "fetched"


@dataclass(frozen=True)
class CrlState:
    """A trust anchor with its stored CRL, as administrators see it."""

    anchor: TrustAnchor
    crl: TaxCrl | None
    now: dt.datetime

    @property
    def status(self) -> str:
        """One of current, stale (past nextUpdate), missing, or n/a (not a tax anchor)."""
        if self.anchor.purpose is not TrustPurpose.TAX:
            return "n/a"
        if self.crl is None:
            return "missing"
        return "stale" if self.now > self.crl.next_update else "current"


# -- checking a CRL -------------------------------------------------------------------------


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise _InvalidCrl(
            _l("This is not a certificate revocation list (CRL) in PEM or DER form.")
        ) from None


def _anchor_certificate(anchor: TrustAnchor) -> x509.Certificate:
    if anchor.purpose is not TrustPurpose.TAX:
        raise _InvalidCrl(
            _l(
                "%(subject)s is a %(purpose)s trust anchor; CRLs are kept for tax anchors only.",
                subject=anchor.subject,
                purpose=anchor.purpose.value,
            )
        )
    return x509.load_der_x509_certificate(anchor.der)


def _extension_value(extensions: x509.Extensions, kind: type[Any]) -> Any:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_issued_by(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, subject: str
) -> None:
    if crl.issuer != issuer.subject:
        raise _InvalidCrl(
            _l(
                "This CRL was issued by %(issuer)s, not by %(subject)s.",
                issuer=crl.issuer.rfc4514_string(),
                subject=subject,
            )
        )
    usage = _extension_value(issuer.extensions, x509.KeyUsage)
    if usage is not None and not usage.crl_sign:
        raise _InvalidCrl(
            _l(
                "The key usage of %(subject)s does not allow it to sign CRLs (cRLSign is not set).",
                subject=subject,
            )
        )
    key_id = _extension_value(issuer.extensions, x509.SubjectKeyIdentifier)
    authority = _extension_value(crl.extensions, x509.AuthorityKeyIdentifier)
    if (
        key_id is not None
        and authority is not None
        and authority.key_identifier is not None
        and authority.key_identifier != key_id.digest
    ):
        raise _InvalidCrl(
            _l(
                "This CRL was signed by another key than that of %(subject)s (its authority "
                "key identifier differs from the anchor's subject key identifier).",
                subject=subject,
            )
        )
    public_key = issuer.public_key()
    if not isinstance(public_key, _CRL_SIGNER_KEYS):
        raise _InvalidCrl(_l("The key of %(subject)s cannot sign CRLs.", subject=subject))
    try:
        valid = crl.is_signature_valid(public_key)
    except (UnsupportedAlgorithm, ValueError, TypeError):
        raise _InvalidCrl(
            _l(
                "The CRL's signature algorithm (%(oid)s) is not supported.",
                oid=crl.signature_algorithm_oid.dotted_string,
            )
        ) from None
    if not valid:
        raise _InvalidCrl(
            _l(
                "The CRL's signature does not verify with the public key of %(subject)s: it "
                "was not signed by this CA.",
                subject=subject,
            )
        )


def _check_scope(crl: x509.CertificateRevocationList) -> None:
    """Only complete CRLs: a delta or partitioned CRL does not list every revoked serial."""
    for extension in crl.extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            raise _InvalidCrl(_l("This is a delta CRL; upload the CA's complete CRL."))
        if isinstance(value, x509.IssuingDistributionPoint):
            if value.indirect_crl or value.only_some_reasons or value.only_contains_attribute_certs:
                raise _InvalidCrl(
                    _l(
                        "This CRL covers only part of the CA's certificates (indirect, some "
                        "reasons only, or attribute certificates); upload the complete CRL."
                    )
                )
        elif extension.critical and extension.oid not in _UNDERSTOOD_CRITICAL:
            raise _InvalidCrl(
                _l(
                    "This CRL has a critical extension this service does not understand "
                    "(%(oid)s), so it cannot be used.",
                    oid=extension.oid.dotted_string,
                )
            )


def _check_times(
    crl: x509.CertificateRevocationList, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    this_update = crl.last_update_utc
    next_update = crl.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise _InvalidCrl(
            _l(
                "This CRL's thisUpdate (%(time)s UTC) is in the future; check the clocks.",
                time=_when(this_update),
            )
        )
    if next_update is None:
        raise _InvalidCrl(
            _l("This CRL has no nextUpdate, so nobody can tell when it is out of date.")
        )
    if next_update <= this_update:
        raise _InvalidCrl(_l("This CRL's nextUpdate is not after its thisUpdate."))
    return this_update, next_update


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    number = _extension_value(crl.extensions, x509.CRLNumber)
    return None if number is None else int(number.crl_number)


def _revoked_entries(crl: x509.CertificateRevocationList) -> dict[int, RevokedEntry]:
    entries: dict[int, RevokedEntry] = {}
    try:
        for revoked in crl:
            reason: str | None = None
            for extension in revoked.extensions:
                if extension.oid == CRLEntryExtensionOID.CRL_REASON:
                    reason = extension.value.reason.value
            entries[revoked.serial_number] = RevokedEntry(
                revoked.serial_number, revoked.revocation_date_utc, reason
            )
    except ValueError:
        raise _InvalidCrl(_l("This CRL's list of revoked certificates is malformed.")) from None
    return entries


def _check_newer(
    stored: TaxCrl, *, number: int | None, this_update: dt.datetime, der: bytes
) -> bool:
    """Whether the CRL differs from the stored one (False: the same CRL again).

    :raises ValidationError: when it is older than the stored one.
    """
    stored_number = int(stored.crl_number, 16) if stored.crl_number is not None else None
    if number is not None and stored_number is not None and number < stored_number:
        raise _InvalidCrl(
            _l(
                "This CRL (number %(number)s) is older than the stored one (number "
                "%(stored_number)s); a CRL never replaces a newer one.",
                number=number,
                stored_number=stored_number,
            )
        )
    if this_update < stored.this_update:
        raise _InvalidCrl(
            _l(
                "This CRL (thisUpdate %(time)s UTC) is older than the stored one (thisUpdate "
                "%(stored_time)s UTC); a CRL never replaces a newer one.",
                time=_when(this_update),
                stored_time=_when(stored.this_update),
            )
        )
    if number == stored_number and this_update == stored.this_update:
        if der == stored.der:
            return False
        raise _InvalidCrl(
            _l(
                "This CRL has the same number and thisUpdate as the stored one but other "
                "content; the CA must give a new CRL a new number."
            )
        )
    return True


# -- the per-process cache ------------------------------------------------------------------

_AnchorKey = tuple[int, str]  # anchor id, certificate fingerprint
# Which CRL of an anchor: thisUpdate and cRLNumber. A CRL replaces the stored one only when
# it is newer, and one with the same number and thisUpdate must be the very same CRL
# (_check_newer), so the two tell the stored CRLs of an anchor apart.
_RowKey = tuple[dt.datetime, str | None]


@dataclass(frozen=True)
class _Parsed:
    key: _RowKey
    next_update: dt.datetime
    revoked: Mapping[int, RevokedEntry]


class _CrlCache:
    """The parsed CRL of each anchor (one per anchor), and when to try fetching again.

    Shared by the threads of a worker. Lookups are plain dict reads (atomic under the GIL);
    parsing, fetching and the retry bookkeeping of one anchor are serialised by its lock, so
    a burst of sign-ins parses or fetches a CRL once.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[_AnchorKey, threading.Lock] = {}
        self._parsed: dict[_AnchorKey, _Parsed] = {}
        # Why the last fetch failed, untranslated (LazyString): read by other requests.
        self._retry: dict[_AnchorKey, tuple[dt.datetime, LazyString]] = {}

    def lock(self, anchor: _AnchorKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(anchor, threading.Lock())

    def get(self, anchor: _AnchorKey, row: _RowKey) -> _Parsed | None:
        parsed = self._parsed.get(anchor)
        return parsed if parsed is not None and parsed.key == row else None

    def latest(self, anchor: _AnchorKey) -> _Parsed | None:
        return self._parsed.get(anchor)

    def put(self, anchor: _AnchorKey, parsed: _Parsed) -> None:
        self._parsed[anchor] = parsed

    def retry_blocked(self, anchor: _AnchorKey, now: dt.datetime) -> LazyString | None:
        """The last failure's message while it is too early to try again, else None."""
        blocked = self._retry.get(anchor)
        if blocked is None or now >= blocked[0]:
            return None
        return blocked[1]

    def failed(self, anchor: _AnchorKey, now: dt.datetime, message: LazyString) -> None:
        self._retry[anchor] = (now + RETRY_AFTER, message)

    def succeeded(self, anchor: _AnchorKey) -> None:
        self._retry.pop(anchor, None)


def _cache() -> _CrlCache:
    # One per app, which is one per worker process in production (and one per test app, so
    # tests never see each other's CRLs). setdefault is atomic: threads share one cache.
    extensions = current_app.extensions
    cache = extensions.get(_CACHE_KEY)
    if cache is None:
        cache = extensions.setdefault(_CACHE_KEY, _CrlCache())
    return cast("_CrlCache", cache)


def _anchor_key(anchor: TrustAnchor) -> _AnchorKey:
    return (anchor.id, anchor.fingerprint_sha256)


def _row_key(this_update: dt.datetime, crl_number: str | None) -> _RowKey:
    return (this_update, crl_number)


# -- storing and fetching -------------------------------------------------------------------


def store_crl(
    *, actor: Actor, anchor: TrustAnchor, der_or_pem: bytes, source: str, now: dt.datetime
) -> TaxCrl:
    """Check a CRL against the tax anchor that issued it and keep it unless the stored one
    is newer; flushes. Storing the very CRL already stored only notes when it was fetched.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises ValidationError: not a CRL; not issued or not signed by this anchor; thisUpdate
        in the future; no nextUpdate; a delta or partial CRL; older than the stored one.
    :raises Conflict: when another CRL of the anchor was stored at the same moment.
    """
    actor_name = acting(actor)
    issuer = _anchor_certificate(anchor)
    crl = _load_crl(der_or_pem)
    _check_issued_by(crl, issuer, anchor.subject)
    _check_scope(crl)
    this_update, next_update = _check_times(crl, now)
    number = _crl_number(crl)
    revoked = _revoked_entries(crl)
    der = crl.public_bytes(Encoding.DER)  # what we keep is DER, whatever was uploaded
    number_hex = None if number is None else format(number, "x")

    row = db.session.scalar(
        sa.select(TaxCrl)
        .where(TaxCrl.anchor_id == anchor.id)
        .options(defer(TaxCrl.der))
        .with_for_update()
    )
    changed = True
    if row is None:
        row = TaxCrl(anchor_id=anchor.id)
        _fill(row, der, number_hex, this_update, next_update)
        _note_fetch(row, source, now)
        try:
            with db.session.begin_nested():
                db.session.add(row)
        except sa.exc.IntegrityError:
            raise _CrlConflict(
                _l(
                    "Another CRL of %(subject)s was stored at the same moment; try again.",
                    subject=anchor.subject,
                )
            ) from None
    else:
        changed = _check_newer(row, number=number, this_update=this_update, der=der)
        if changed:
            _fill(row, der, number_hex, this_update, next_update)
        _note_fetch(row, source, now)
        db.session.flush()
    _cache().put(
        _anchor_key(anchor),
        _Parsed(_row_key(this_update, number_hex), next_update, revoked),
    )
    if changed:
        record_event(
            actor_name,
            "trust.crl_stored",
            anchor.fingerprint_sha256,
            {
                "subject": anchor.subject,
                "crl_number": number_hex,
                "this_update": this_update.isoformat(),
                "next_update": next_update.isoformat(),
                "revoked_count": len(revoked),
                "source": source,
            },
        )
    return row


def _fill(
    row: TaxCrl,
    der: bytes,
    number_hex: str | None,
    this_update: dt.datetime,
    next_update: dt.datetime,
) -> None:
    row.der = der
    row.crl_number = number_hex
    row.this_update = this_update
    row.next_update = next_update


def _note_fetch(row: TaxCrl, source: str, now: dt.datetime) -> None:
    row.fetched_at = now
    row.source = source[:500]
    row.last_error = None


class _DownloadError(Exception):
    """Why a download failed, in a few words (the URL is named by the caller); ``reason`` is
    translated when shown."""

    def __init__(self, reason: LazyString) -> None:
        super().__init__(str(reason))
        self.reason = reason


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp://)."""

    def redirect_request(  # noqa: PLR0917  (urllib's signature)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not is_http_url(newurl):
            fp.close()
            raise _DownloadError(
                _l("it redirects to a URL that is not http(s): %(url)s", url=newurl)
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def is_http_url(url: str) -> bool:
    """Whether ``url`` is a well-formed http:// or https:// URL with a host."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        return False


def _download(url: str, *, timeout: float, limit: int) -> bytes:
    if not is_http_url(url):
        raise _DownloadError(_l("only http:// and https:// URLs are fetched"))
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(  # noqa: S310  (the scheme is checked just above)
        url, headers={"Accept": "application/pkix-crl, */*", "User-Agent": "ca-service"}
    )
    opener = urllib.request.build_opener(_HttpOnlyRedirects())
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _DownloadError(_too_large(limit))
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise _DownloadError(_too_large(limit))
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()  # its body stays unread; close the connection it holds
        raise _DownloadError(
            _l("the server answered HTTP %(status)s %(reason)s", status=exc.code, reason=exc.reason)
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _DownloadError(
                _l("no answer within %(seconds)s seconds", seconds=format(timeout, "g"))
            ) from None
        raise _DownloadError(_l("cannot connect (%(reason)s)", reason=exc.reason)) from None
    except TimeoutError:
        raise _DownloadError(
            _l("no complete answer within %(seconds)s seconds", seconds=format(timeout, "g"))
        ) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: a URL http.client refuses (control characters, a bad port).
        raise _DownloadError(
            _l("the download failed (%(error)s)", error=str(exc) or type(exc).__name__)
        ) from None


def _too_large(limit: int) -> LazyString:
    return _l("the CRL is larger than %(size)s MB", size=limit // (1024 * 1024))


def fetch_crl(
    *, actor: Actor, anchor: TrustAnchor, url: str, timeout: float, now: dt.datetime
) -> TaxCrl:
    """Download the anchor's CRL from ``url`` and store it (``store_crl``); flushes.

    A failure is noted on the stored CRL (``last_error``, shown to administrators), which
    stays in use until it is out of date.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises CrlFetchFailed: the download failed, or what came back is refused by store_crl.
    """
    actor_name = acting(actor)
    try:
        data = _download(url, timeout=timeout, limit=MAX_CRL_BYTES)
        return store_crl(actor=actor_name, anchor=anchor, der_or_pem=data, source=url, now=now)
    except (_DownloadError, _InvalidCrl, _CrlConflict) as exc:
        lazy_reason = exc.reason if isinstance(exc, _DownloadError) else exc.lazy
        # A record every administrator reads, whatever their language: the default one.
        with force_locale(DEFAULT_LANGUAGE):
            _note_failure(anchor, f"{format_utc_datetime(now)} UTC, {url}: {lazy_reason}")
        reason = str(lazy_reason)
        raise CrlFetchFailed(
            _(
                "Could not fetch the CRL of %(subject)s from %(url)s: %(reason)s",
                subject=anchor.subject,
                url=url,
                reason=reason,
            ),
            url=url,
            reason=reason,
            lazy_reason=lazy_reason,
        ) from None


def _note_failure(anchor: TrustAnchor, message: str) -> None:
    db.session.execute(
        sa.update(TaxCrl)
        .where(TaxCrl.anchor_id == anchor.id)
        .values(last_error=message[:_ERROR_LENGTH])
    )
    db.session.flush()


def upload_crl(*, actor: Actor, anchor_id: int, data: bytes, now: dt.datetime) -> TaxCrl:
    """Store a CRL a CA administrator uploads for anchor ``anchor_id``; flushes.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises NotFound: when there is no such anchor.
    :raises ValidationError: as ``store_crl``.
    """
    actor_name = acting(actor)
    anchor = get_anchor(anchor_id)
    return store_crl(
        actor=actor_name,
        anchor=anchor,
        der_or_pem=data,
        source=f"upload:{actor_name}",
        now=now,
    )


def fetch_anchor_crl(
    *, actor: Actor, anchor_id: int, settings: Settings, now: dt.datetime
) -> TaxCrl:
    """Fetch anchor ``anchor_id``'s CRL from its CRL URL now; flushes.

    :raises Forbidden: when a user who is not a CA administrator acts.
    :raises NotFound: when there is no such anchor.
    :raises ValidationError: when it has no CRL URL or is not a tax anchor.
    :raises CrlFetchFailed: as ``fetch_crl``.
    """
    actor_name = acting(actor)
    anchor = get_anchor(anchor_id)
    _anchor_certificate(anchor)
    if not anchor.crl_url:
        raise ValidationError(
            _(
                "%(subject)s has no CRL URL; set where the CA publishes its CRL first.",
                subject=anchor.subject,
            )
        )
    return fetch_crl(
        actor=actor_name,
        anchor=anchor,
        url=anchor.crl_url,
        timeout=float(settings["TAX_CRL_FETCH_SECONDS"]),
        now=now,
    )


def refresh_all(*, actor: Actor, settings: Settings, now: dt.datetime) -> list[RefreshResult]:
    """Fetch the CRL of every enabled tax anchor that has a CRL URL (for cron); flushes.

    A failure is reported in its result (and noted on the stored CRL); the others go on.
    Enabled tax anchors without a CRL URL are reported as skipped.

    :raises Forbidden: when a user who is not a CA administrator acts.
    """
    actor_name = acting(actor)
    anchors = db.session.scalars(
        sa.select(TrustAnchor)
        .where(TrustAnchor.purpose == TrustPurpose.TAX, TrustAnchor.enabled.is_(True))
        .order_by(TrustAnchor.id)
    ).all()
    timeout = float(settings["TAX_CRL_FETCH_SECONDS"])
    results = []
    for anchor in anchors:
        if not anchor.crl_url:
            results.append(RefreshResult(anchor.id, anchor.subject, None, None, None))
            continue
        try:
            crl = fetch_crl(
                actor=actor_name, anchor=anchor, url=anchor.crl_url, timeout=timeout, now=now
            )
        except CrlFetchFailed as exc:
            results.append(
                RefreshResult(anchor.id, anchor.subject, anchor.crl_url, None, exc.message)
            )
        else:
            results.append(RefreshResult(anchor.id, anchor.subject, anchor.crl_url, crl, None))
    return results


def crl_states(*, now: dt.datetime) -> list[CrlState]:
    """Every trust anchor with its stored CRL (tax anchors), oldest anchor first."""
    anchors = db.session.scalars(sa.select(TrustAnchor).order_by(TrustAnchor.id)).all()
    crls = {
        crl.anchor_id: crl
        for crl in db.session.scalars(sa.select(TaxCrl).options(defer(TaxCrl.der)))
    }
    return [CrlState(anchor, crls.get(anchor.id), now) for anchor in anchors]


# -- revocation checks on the sign-in path ---------------------------------------------------


@dataclass(frozen=True)
class StoredCrl:
    """Which CRL of an anchor is stored, as the sign-in path reads it: only what tells it
    from the anchor's other CRLs (its nextUpdate and entries come from this process's parse
    of it, made once per CRL)."""

    this_update: dt.datetime
    crl_number: str | None

    @property
    def key(self) -> _RowKey:
        return _row_key(self.this_update, self.crl_number)


_TAX_CRLS = TaxCrl.__table__
# Built once and run on the session's connection: the ORM layer would cost four times as much
# as the query itself, on every sign-in.
_WHICH_CRL = sa.select(_TAX_CRLS.c.this_update, _TAX_CRLS.c.crl_number).where(
    _TAX_CRLS.c.anchor_id == sa.bindparam("anchor_id")
)


def revocation_of(
    *,
    anchor: TrustAnchor,
    serial: int,
    hint_urls: Sequence[str],
    settings: Settings,
    now: dt.datetime,
) -> RevokedEntry | None:
    """The CRL entry of certificate ``serial`` issued by tax anchor ``anchor``; None when it
    is not revoked.

    Uses the stored CRL while ``now`` is not past its nextUpdate. Otherwise fetches the CA's
    CRL from ``anchor.crl_url`` or else the first http(s) URL of ``hint_urls`` (the checked
    certificate's CRL distribution points); may therefore store a CRL (flush, and an audit
    event), so call it in a transaction that may write. When no current CRL can be had, the
    stale one serves for TAX_CRL_GRACE_HOURS past its nextUpdate. After a failed fetch this
    process waits RETRY_AFTER before fetching that CA's CRL again.

    :raises CrlUnavailable: no usable CRL (missing, or out of date beyond the grace period);
        the message names the CA and since when its CRL is out of date.
    """
    return revocation_in_stored(
        anchor=anchor,
        stored=stored_crl_of(anchor.id),
        serial=serial,
        hint_urls=hint_urls,
        settings=settings,
        now=now,
    )


def stored_crl_of(anchor_id: int) -> StoredCrl | None:
    """Which CRL of anchor ``anchor_id`` is stored (in this transaction); None when none is."""
    found = db.session.connection().execute(_WHICH_CRL, {"anchor_id": anchor_id}).one_or_none()
    return None if found is None else StoredCrl(*found)


def revocation_in_stored(
    *,
    anchor: TrustAnchor,
    stored: StoredCrl | None,
    serial: int,
    hint_urls: Sequence[str],
    settings: Settings,
    now: dt.datetime,
) -> RevokedEntry | None:
    """``revocation_of`` for a caller that read which CRL of ``anchor`` is stored (``stored``,
    None when there is none) itself, in this transaction: a sign-in reads it in the same
    query as the account the certificate maps to.

    :raises CrlUnavailable: as ``revocation_of``.
    """
    cache = _cache()
    anchor_key = _anchor_key(anchor)
    parsed = None
    if stored is not None:
        parsed = cache.get(anchor_key, stored.key)
        if parsed is None:
            with cache.lock(anchor_key):
                parsed = cache.get(anchor_key, stored.key) or _parse_stored(
                    cache, anchor_key, anchor.id
                )
        if parsed is not None and now <= parsed.next_update:
            return parsed.revoked.get(serial)
    with cache.lock(anchor_key):
        parsed = _current_or_graced(
            cache, anchor, parsed, hint_urls=hint_urls, settings=settings, now=now
        )
    return parsed.revoked.get(serial)


def _parse_stored(cache: _CrlCache, anchor_key: _AnchorKey, anchor_id: int) -> _Parsed | None:
    """Parse the anchor's stored CRL into the cache (the caller holds the anchor's lock); None
    when there is none. (Read again here, it may be newer than the one the caller saw, when
    another transaction stored one meanwhile: never older.)"""
    stored = db.session.execute(
        sa.select(TaxCrl.der, TaxCrl.this_update, TaxCrl.next_update, TaxCrl.crl_number).where(
            TaxCrl.anchor_id == anchor_id
        )
    ).one_or_none()
    if stored is None:
        return None
    # Checked against the anchor when it was stored; only the entries are needed now.
    parsed = _Parsed(
        _row_key(stored.this_update, stored.crl_number),
        stored.next_update,
        _revoked_entries(_load_crl(stored.der)),
    )
    cache.put(anchor_key, parsed)
    return parsed


def _current_or_graced(
    cache: _CrlCache,
    anchor: TrustAnchor,
    stale: _Parsed | None,
    *,
    hint_urls: Sequence[str],
    settings: Settings,
    now: dt.datetime,
) -> _Parsed:
    """A current CRL (fetched now, or by another thread meanwhile), else the stored one,
    ``stale`` (None when there is none), within the grace period (the caller holds the
    anchor's lock).

    :raises CrlUnavailable: when there is neither.
    """
    anchor_key = _anchor_key(anchor)
    latest = cache.latest(anchor_key)
    if latest is not None and now <= latest.next_update:
        # Another thread of this process fetched it while we waited for the lock (its
        # request may not have committed yet, but the CRL was checked against the anchor).
        return latest
    error = cache.retry_blocked(anchor_key, now)
    if error is None:
        error = _fetch_for_lookup(
            cache, anchor=anchor, hint_urls=hint_urls, settings=settings, now=now
        )
        latest = cache.latest(anchor_key)
        if error is None and latest is not None:
            return latest
    grace = dt.timedelta(hours=int(settings["TAX_CRL_GRACE_HOURS"]))
    if stale is not None and now <= stale.next_update + grace:
        return stale
    raise CrlUnavailable(_unavailable_message(anchor, stale, error or _l("no CRL was kept")))


def _fetch_for_lookup(
    cache: _CrlCache,
    *,
    anchor: TrustAnchor,
    hint_urls: Sequence[str],
    settings: Settings,
    now: dt.datetime,
) -> LazyString | None:
    """Fetch a current CRL into the cache; why that failed (untranslated: it is kept for
    other requests), or None when it worked."""
    anchor_key = _anchor_key(anchor)
    url = anchor.crl_url or next((u for u in hint_urls if is_http_url(u)), None)
    if url is None:
        error = _l(
            "no CRL URL is set for the CA and the certificate names no http(s) CRL "
            "distribution point"
        )
    else:
        try:
            crl = fetch_crl(
                actor=FETCH_ACTOR,
                anchor=anchor,
                url=url,
                timeout=float(settings["TAX_CRL_FETCH_SECONDS"]),
                now=now,
            )
        except CrlFetchFailed as exc:
            error = _l("%(url)s: %(reason)s", url=exc.url, reason=exc.lazy_reason)
        else:
            if now <= crl.next_update:
                cache.succeeded(anchor_key)
                return None
            error = _l(
                "the CRL at %(url)s is out of date too (nextUpdate %(time)s UTC)",
                url=url,
                time=_when(crl.next_update),
            )
    cache.failed(anchor_key, now, error)
    return error


def _unavailable_message(anchor: TrustAnchor, stale: _Parsed | None, error: LazyString) -> str:
    """Built for each refusal, in the language of the request refused (``error`` may come
    from another request's fetch: it is translated here)."""
    if stale is None:
        return str(
            _(
                "Certificates of the tax CA %(subject)s cannot be checked for revocation: its "
                "revocation list (CRL) is missing and no current one could be fetched (%(error)s). "
                "Tax-certificate sign-in is refused until a CA administrator uploads a current CRL "
                "or the service can fetch one.",
                subject=anchor.subject,
                error=error,
            )
        )
    return str(
        _(
            "Certificates of the tax CA %(subject)s cannot be checked for revocation: its "
            "revocation list (CRL) is out of date since %(time)s UTC and no current one could be "
            "fetched (%(error)s). Tax-certificate sign-in is refused until a CA administrator "
            "uploads a current CRL or the service can fetch one.",
            subject=anchor.subject,
            time=format_utc_datetime(stale.next_update),
            error=error,
        )
    )


__all__ = [
    "CLOCK_SKEW",
    "MAX_CRL_BYTES",
    "RETRY_AFTER",
    "CrlFetchFailed",
    "CrlState",
    "CrlUnavailable",
    "RefreshResult",
    "RevokedEntry",
    "StoredCrl",
    "crl_states",
    "fetch_anchor_crl",
    "fetch_crl",
    "is_http_url",
    "refresh_all",
    "revocation_in_stored",
    "revocation_of",
    "store_crl",
    "stored_crl_of",
    "upload_crl",
]
