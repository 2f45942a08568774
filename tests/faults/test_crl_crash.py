"""Crash consistency of CRL publication: `ca-service crl publish` SIGKILLed after the HSM
signed a CRL and before it was stored keeps nothing of it. The previous CRLs are still served,
the next publication takes the next CRL number of every CA (a number belongs to a CRL only
once it commits: no gap, none twice), and the audit chain stays intact.

The process, the database and the SoftHSM token are real (tests/faults/dying_crl.py only
chooses the moment of death)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.authorities.service import current_certificate, get_authority, load_certificate
from ca_service.db import db
from ca_service.revocation.models import PublishedCRL
from tests.conftest import CliInvoke, process_env
from tests.faults.test_crl_faults import SLUGS, _numbers_in_sequence, _one_more, _served

DYING_CRL = Path(__file__).with_name("dying_crl.py")


def _stored(app: Flask) -> list[tuple[int, int, bytes]]:
    with app.app_context():
        return [
            (row.issuer_id, row.number, row.der)
            for row in db.session.scalars(
                sa.select(PublishedCRL).order_by(PublishedCRL.issuer_id, PublishedCRL.number)
            )
        ]


def _ca_certificate(app: Flask, slug: str) -> x509.Certificate:
    with app.app_context():
        return load_certificate(current_certificate(get_authority(slug)))


def _served_der(client: FlaskClient) -> dict[str, bytes]:
    return {slug: client.get(f"/pki/crl/{slug}.crl").data for slug in SLUGS}


def _published_events(app: Flask) -> int:
    with app.app_context():
        return len(
            db.session.scalars(
                sa.select(AuditEvent.seq).where(AuditEvent.action == "crl.published")
            ).all()
        )


def test_crl_publish_killed_after_the_hsm_signed_stores_nothing_and_the_next_number_follows(
    app: Flask,
    client: FlaskClient,
    cli: CliInvoke,
    app_overrides: dict[str, Any],
    tmp_path: Path,
) -> None:
    assert cli("crl", "publish").exit_code == 0  # every CA has a CRL before and after: 2+
    before, served, stored = _served(client), _served_der(client), _stored(app)
    events = _published_events(app)

    signed_file = tmp_path / "signed.crl"
    died = subprocess.run(
        [sys.executable, str(DYING_CRL), "crl", "publish"],
        env={**process_env(app_overrides), "SIGNED_CRL_FILE": str(signed_file)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr.decode()
    # It died with a CRL signed by a CA's key in the HSM, numbered next.
    signed = x509.load_der_x509_crl(signed_file.read_bytes())
    (slug,) = [s for s in SLUGS if _ca_certificate(app, s).subject == signed.issuer]
    assert signed.is_signature_valid(_ca_certificate(app, slug).public_key())
    lost_number = signed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert lost_number == before[slug] + 1

    # Nothing of the signed CRL was kept, nor its audit event; the previous CRLs are served.
    assert _stored(app) == stored
    assert _served_der(client) == served
    assert _published_events(app) == events
    _numbers_in_sequence(app)

    # The dead process held the issuer's row and the audit log: the next publication neither
    # waits for them nor skips the number the dead one had taken.
    result = cli("crl", "publish")
    assert result.exit_code == 0, result.output
    assert _served(client) == _one_more(before)  # the lost CRL's number, now on a stored CRL
    _numbers_in_sequence(app)
    assert _published_events(app) == events + len(SLUGS)
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
