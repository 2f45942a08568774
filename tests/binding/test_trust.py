"""`ca-service trust add|list|disable|enable`: CA certificates only, no duplicates, audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask

from ca_service.audit.models import AuditEvent
from ca_service.binding.models import TrustPurpose
from ca_service.binding.service import trusted_certificates
from ca_service.db import db
from tests.conftest import CliInvoke
from tests.issuance.seal_factory import make_seal, make_seal_ca, make_uscc


def test_trust_anchor_lifecycle(app: Flask, cli: CliInvoke, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca = make_seal_ca("Seal Root For CLI", now=now)
    pem = tmp_path / "seal-root.pem"
    pem.write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    added = cli("trust", "add", "--purpose", "seal", str(pem))
    assert added.exit_code == 0, added.output
    assert "Seal Root For CLI" in added.output
    again = cli("trust", "add", "--purpose", "seal", str(pem))
    assert again.exit_code != 0
    assert "already a seal trust anchor" in again.output

    leaf = make_seal(
        ca,
        organisation="X",
        registration_number=make_uscc("91110000600037341"),
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    der = tmp_path / "leaf.der"
    der.write_bytes(leaf.certificate.public_bytes(Encoding.DER))
    refused = cli("trust", "add", "--purpose", "tax", str(der))
    assert refused.exit_code != 0
    assert "is not a CA certificate" in refused.output

    listing = cli("trust", "list")
    assert "seal" in listing.output
    anchor_id = listing.output.splitlines()[1].split()[0]
    with app.app_context():
        assert trusted_certificates(TrustPurpose.SEAL) == [ca.certificate]
    assert cli("trust", "disable", anchor_id).exit_code == 0
    with app.app_context():
        assert trusted_certificates(TrustPurpose.SEAL) == []
    assert cli("trust", "enable", anchor_id).exit_code == 0
    with app.app_context():
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.action.like("trust.%"))
        ).all()
    assert actions == ["trust.anchor_added", "trust.anchor_disabled", "trust.anchor_enabled"]
