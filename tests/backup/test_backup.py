"""`ca-service backup` and `restore`: restored into a fresh database (of the same backend) and a
fresh document directory and secret-key file, on the same HSM token, OCSP, the CRL, logins and
`audit verify` answer as before; damaged archives and non-empty databases are refused."""

from __future__ import annotations

import gzip
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509 import ocsp
from flask import Flask
from flask.testing import FlaskClient

from ca_service.app import create_app
from ca_service.audit.service import sign_checkpoint
from ca_service.cli import main
from ca_service.db import db, upgrade_database
from ca_service.employers.models import Employer
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance.models import (
    Application,
    ApplicationEvent,
    ApplicationStatus,
    KeySource,
)
from ca_service.storage import DocumentStore
from tests.auth.flows import MakeOfficer, code_at, enter_code, location, login
from tests.conftest import PG_ENV, CliInvoke, _scratch_postgres_database
from tests.revocation.conftest import MakeCertificate
from tests.revocation.ocsp_tools import OCSP_REQUEST, ca_certificates, ocsp_request


@contextmanager
def _empty_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    server = os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1)
    with _scratch_postgres_database(server) as url:
        yield url


def _run(overrides: dict[str, Any], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"overrides": overrides})


def _statuses(client: FlaskClient, app: Flask, certificates: list[x509.Certificate]) -> list[str]:
    _root, issuing, _responder = ca_certificates(app)
    answers = []
    for certificate in certificates:
        response = client.post(
            "/ocsp", data=ocsp_request(certificate, issuing), headers=OCSP_REQUEST
        )
        assert response.status_code == 200
        answers.append(ocsp.load_der_ocsp_response(response.data).certificate_status.name)
    return answers


def _events(verified: str) -> int:
    found = re.search(r"audit log intact: (\d+) events", verified)
    assert found, verified
    return int(found.group(1))


def _signs_in(app: Flask, username: str, password: str, seed: str) -> bool:
    client = app.test_client()
    login(client, username, password)
    return location(enter_code(client, code_at(seed))) == "/auth/home"


@pytest.fixture
def archive(
    app: Flask,
    cli: CliInvoke,
    make_certificate: MakeCertificate,
    tmp_path: Path,
) -> Path:
    target = tmp_path / "ca-backup.tar.gz"
    result = cli("backup", str(target))
    assert result.exit_code == 0, result.output
    return target


def test_a_restore_answers_as_the_original(
    app: Flask,
    cli: CliInvoke,
    app_overrides: dict[str, Any],
    database_url: str,
    make_certificate: MakeCertificate,
    make_officer: MakeOfficer,
    tmp_path: Path,
) -> None:
    good, bad = make_certificate(), make_certificate()
    assert cli("revoke", bad.serial, "--reason", "keyCompromise").exit_code == 0
    assert cli("crl", "publish").exit_code == 0
    officer = make_officer()
    sealed = b"%PDF-1.7 sealed application form " + secrets.token_bytes(16)
    reasons = {"reasons": [{"code": "employer_changed", "date": "2026-01-02"}]}
    with app.app_context():
        employer = Employer(
            registration_number="BACKUP1", legal_name="L", mobile="+1234567", email="b@x.test"
        )
        db.session.add(employer)
        db.session.flush()
        application = Application(
            employer_id=employer.id,
            status=ApplicationStatus.SUBMITTED,
            key_source=KeySource.CSR,
            created_by_id=officer.user.id,
        )
        db.session.add(application)
        db.session.flush()
        db.session.add(
            ApplicationEvent(
                application_id=application.id,
                status=ApplicationStatus.SUBMITTED,
                actor="tests",
                note_code="renewal_needs_review",
                note_params=reasons,
            )
        )
        digest = DocumentStore(settings_of(app).document_dir).put(sealed)
        assert sign_checkpoint(app_token()) is not None
        db.session.commit()
    target = tmp_path / "ca-backup.tar.gz"
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output
    made = cli("backup", str(target))
    assert made.exit_code == 0, made.output
    assert "documents" in made.output
    assert os.stat(target).st_mode & 0o077 == 0  # it holds the secret key
    original = app.test_client()
    crl = original.get("/pki/crl/employer.crl").data
    statuses = _statuses(original, app, [good.certificate, bad.certificate])
    assert statuses == ["GOOD", "REVOKED"]

    with _empty_database(database_url, tmp_path) as url:
        fresh = {
            **app_overrides,
            "DATABASE_URL": url,
            "DOCUMENT_DIR": str(tmp_path / "restored-documents"),
            "SECRET_KEY_FILE": str(tmp_path / "restored-secret-key"),
            "SECRET_KEY": "",
        }
        restored = _run(fresh, "restore", str(target))
        assert restored.exit_code == 0, restored.output
        audit = _run(fresh, "audit", "verify")
        assert audit.exit_code == 0, audit.output
        # The same events, and the restore's own (the backup's came after its snapshot).
        assert _events(audit.output) == _events(verified.output) + 1
        assert (tmp_path / "restored-secret-key").read_text().strip() == app_overrides["SECRET_KEY"]
        again = _run(fresh, "restore", str(target))
        assert again.exit_code == 1
        assert "already holds data" in again.output
        other = create_app(fresh)
        try:
            client = other.test_client()
            assert client.get("/pki/crl/employer.crl").data == crl
            assert _statuses(client, other, [good.certificate, bad.certificate]) == statuses
            assert _signs_in(other, officer.user.username, officer.password, officer.seed)
            assert DocumentStore(tmp_path / "restored-documents").get(digest) == sealed
            with other.app_context():
                params = db.session.scalars(sa.select(ApplicationEvent.note_params)).all()
                assert params == [reasons]  # a JSON column comes back as it was
        finally:
            with other.app_context():
                db.session.remove()
                db.engine.dispose()


def test_damaged_or_foreign_archives_write_nothing(
    archive: Path, app_overrides: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    at = raw.index(b'"serial"')  # inside a table member: the manifest's sum no longer matches
    raw[at + 1] ^= 0x20
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(gzip.compress(bytes(raw)))
    foreign = tmp_path / "foreign.tar.gz"
    foreign.write_bytes(b"not an archive at all")
    with _empty_database(database_url, tmp_path) as url:
        fresh = {
            **app_overrides,
            "DATABASE_URL": url,
            "DOCUMENT_DIR": str(tmp_path / "docs"),
            "SECRET_KEY_FILE": str(tmp_path / "key"),
            "SECRET_KEY": "",
        }
        for bad, message in ((damaged, "does not match its manifest"), (foreign, "not a readable")):
            result = _run(fresh, "restore", str(bad))
            assert result.exit_code == 1
            assert message in result.output
            assert "Traceback" not in result.output
        assert not (tmp_path / "key").exists()
        other_key = {**fresh, "SECRET_KEY": "x" * 48}
        refused = _run(other_key, "restore", str(archive))
        assert refused.exit_code == 1
        assert "another secret key is configured" in refused.output
        upgrade_database(url)  # migrated, as `ca-service db upgrade` leaves it: still empty
        restored = _run(fresh, "restore", str(archive))
        assert restored.exit_code == 0, restored.output


def test_backup_refuses_to_overwrite(archive: Path, cli: CliInvoke) -> None:
    result = cli("backup", str(archive))
    assert result.exit_code == 1
    assert "exists" in result.output


def test_a_sqlite_backup_moves_to_postgresql(
    app: Flask,
    cli: CliInvoke,
    app_overrides: dict[str, Any],
    database_url: str,
    make_certificate: MakeCertificate,
    tmp_path: Path,
) -> None:
    if not database_url.startswith("sqlite") or not os.environ.get(PG_ENV):
        pytest.skip("moves from the SQLite leg to a PostgreSQL server (CA_TEST_DATABASE_URL)")
    good, bad = make_certificate(), make_certificate()
    assert cli("revoke", bad.serial, "--reason", "superseded").exit_code == 0
    target = tmp_path / "move.tar.gz"
    assert cli("backup", str(target)).exit_code == 0
    statuses = _statuses(app.test_client(), app, [good.certificate, bad.certificate])
    server = os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1)
    with _scratch_postgres_database(server) as url:
        fresh = {
            **app_overrides,
            "DATABASE_URL": url,
            "DOCUMENT_DIR": str(tmp_path / "docs"),
            "SECRET_KEY_FILE": str(tmp_path / "key"),
            "SECRET_KEY": "",
        }
        restored = _run(fresh, "restore", str(target))
        assert restored.exit_code == 0, restored.output
        other = create_app(fresh)
        try:
            assert _statuses(other.test_client(), other, [good.certificate, bad.certificate]) == (
                statuses
            )
            # The sequences continue after the restored rows: a new certificate gets a new id.
            assert _run(fresh, "crl", "publish").exit_code == 0
            assert _run(fresh, "audit", "verify").exit_code == 0
        finally:
            with other.app_context():
                db.session.remove()
                db.engine.dispose()
