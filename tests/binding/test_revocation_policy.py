"""The revocation policy of tax anchors (``require`` or ``when-published``), and paths that end
at an enabled intermediate whose root is disabled.

The README's set-up: the tax root and its intermediate trusted, only the intermediate's CRL
uploaded, and an intermediate that names no CRL distribution point (the root publishes no CRL
anyone configures). Under when-published that works; under require it fails closed as before.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography import x509
from flask import Flask
from flask.testing import FlaskClient

from ca_service.audit.models import AuditEvent
from ca_service.auth.verification import (
    CertificateRefused,
    Refusal,
    VerifiedCertificate,
    verify_certificate,
)
from ca_service.binding.models import RevocationPolicy, TrustPurpose
from ca_service.binding.service import (
    add_trust_anchor,
    set_anchor_enabled,
    set_crl_url,
    set_revocation_policy,
)
from ca_service.binding.tax_crls import upload_crl
from ca_service.db import alembic_config, db, upgrade_database, utcnow
from ca_service.extensions import settings_of
from tests.api.conftest import ApiEmployer, api_employer  # noqa: F401  (fixture used by name)
from tests.binding.conftest import CrlServer
from tests.binding.tax_ca import TaxCA
from tests.binding.test_binding import bind, refused, tax_login
from tests.conftest import PG_ENV, _scratch_postgres_database
from tests.issuance.conftest import make_employer  # noqa: F401  (api_employer needs it)

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


@dataclasses.dataclass
class ReadmeWorld:
    """A tax CA trusted as the README says: root and intermediate anchors without CRL URLs, the
    intermediate's CRL uploaded. Its CRLs are also served on ``server`` (the taxpayer
    certificates' CRL DP; the intermediate's, when it has one, names ``/root.crl``)."""

    ca: TaxCA
    server: CrlServer
    root_id: int
    intermediate_id: int

    def upload_intermediate_crl(
        self, app: Flask, revoked: list[tuple[int, x509.ReasonFlags | None]] | None = None
    ) -> None:
        with app.app_context():
            upload_crl(
                actor="tests",
                anchor_id=self.intermediate_id,
                data=self.ca.crl(revoked=revoked or []),
                now=utcnow(),
            )
            db.session.commit()

    def upload_root_crl(
        self,
        app: Flask,
        *,
        revoked: list[tuple[int, x509.ReasonFlags | None]] | None = None,
        this_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
    ) -> None:
        crl = self.ca.crl(
            issuer="root",
            revoked=revoked or [],
            this_update=this_update,
            next_update=next_update,
        )
        with app.app_context():
            upload_crl(actor="tests", anchor_id=self.root_id, data=crl, now=utcnow())
            db.session.commit()

    def set_policy(self, app: Flask, anchor_id: int, policy: RevocationPolicy) -> None:
        with app.app_context():
            set_revocation_policy(actor="tests", anchor_id=anchor_id, policy=policy)
            db.session.commit()

    def set_enabled(self, app: Flask, anchor_id: int, enabled: bool) -> None:
        with app.app_context():
            set_anchor_enabled(actor="tests", anchor_id=anchor_id, enabled=enabled)
            db.session.commit()


def _trust(app: Flask, ca: TaxCA, server: CrlServer) -> ReadmeWorld:
    with app.app_context():
        root = add_trust_anchor(actor="tests", purpose=TrustPurpose.TAX, data=ca.root_pem)
        intermediate = add_trust_anchor(
            actor="tests", purpose=TrustPurpose.TAX, data=ca.intermediate_pem
        )
        db.session.commit()
        assert root.revocation_policy is RevocationPolicy.WHEN_PUBLISHED  # the default
        return ReadmeWorld(ca, server, root.id, intermediate.id)


@pytest.fixture
def readme(app: Flask, crl_server: CrlServer) -> ReadmeWorld:
    """The README's set-up, with an intermediate that names no CRL DP."""
    world = _trust(
        app, TaxCA(crl_base_url=crl_server.base_url, intermediate_crl_dp=False), crl_server
    )
    world.upload_intermediate_crl(app)
    return world


def verify(app: Flask, certificate: x509.Certificate) -> VerifiedCertificate:
    with app.app_context():
        verified = verify_certificate([certificate], settings=settings_of(app), now=utcnow())
        db.session.commit()
        return verified


def refusal_of(app: Flask, certificate: x509.Certificate) -> CertificateRefused:
    with app.app_context(), pytest.raises(CertificateRefused) as refusal:
        verify_certificate([certificate], settings=settings_of(app), now=utcnow())
    return refusal.value


def test_the_readme_set_up_binds_and_signs_in_under_when_published(
    app: Flask,
    client: FlaskClient,
    readme: ReadmeWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = readme.ca.issue(employer.account.number)
    bound = bind(client, employer, certificate, key)
    assert bound.status_code == 201, bound.get_data(as_text=True)
    login = tax_login(client, certificate, key)
    assert login.status_code == 201, login.get_data(as_text=True)
    assert verify(app, certificate).chain == (certificate, readme.ca.intermediate, readme.ca.root)
    # Nothing was fetched: the taxpayer's status came from the uploaded CRL, and nothing says
    # where the root would publish the intermediate's.
    assert readme.server.requests == []


def test_the_readme_set_up_is_refused_under_require(
    app: Flask,
    client: FlaskClient,
    readme: ReadmeWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = readme.ca.issue(employer.account.number)
    readme.set_policy(app, readme.root_id, RevocationPolicy.REQUIRE)
    message = refused(bind(client, employer, certificate, key), "revocation_unknown")
    assert "Test Tax Bureau Root CA" in message  # the CA whose CRL is missing
    # The policy is the path's anchor's: the intermediate's, only helping to build paths
    # under the root, does not count.
    readme.set_policy(app, readme.root_id, RevocationPolicy.WHEN_PUBLISHED)
    readme.set_policy(app, readme.intermediate_id, RevocationPolicy.REQUIRE)
    assert bind(client, employer, certificate, key).status_code == 201


def test_a_revoked_taxpayer_certificate_is_still_refused(app: Flask, readme: ReadmeWorld) -> None:
    certificate, _ = readme.ca.issue("91350100M000100Y43")
    readme.upload_intermediate_crl(app, [(certificate.serial_number, KEY_COMPROMISE)])
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOKED
    assert "keyCompromise" in refusal.message


def test_a_taxpayer_certificate_still_needs_its_crl(app: Flask, crl_server: CrlServer) -> None:
    world = _trust(
        app, TaxCA(crl_base_url=crl_server.base_url, intermediate_crl_dp=False), crl_server
    )
    # No intermediate CRL stored, and the one the certificate names cannot be fetched.
    crl_server.fail("/intermediate.crl", 503)
    certificate, _ = world.ca.issue("91350100M000100Y43")
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOCATION_UNKNOWN
    assert "Test Tax Bureau Issuing CA" in refusal.message
    # Nor does a certificate without a CRL DP go unchecked (its issuer has no CRL).
    without_dp, _ = world.ca.issue("91350100M000100Y43", crl_url=None)
    assert refusal_of(app, without_dp).refusal is Refusal.REVOCATION_UNKNOWN


def test_a_ca_certificate_naming_an_unavailable_crl_dp_is_refused(
    app: Flask, crl_server: CrlServer
) -> None:
    # The intermediate names the root's CRL DP (/root.crl), which is down; the root anchor
    # has no CRL URL and no stored CRL.
    world = _trust(app, TaxCA(crl_base_url=crl_server.base_url), crl_server)
    world.upload_intermediate_crl(app)
    crl_server.fail("/root.crl", 503)
    certificate, _ = world.ca.issue("91350100M000100Y43")
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOCATION_UNKNOWN
    assert "Test Tax Bureau Root CA" in refusal.message
    assert "HTTP 503" in refusal.message
    assert crl_server.requests == ["/root.crl"]
    # Once the root publishes there, the intermediate is checked on its CRL, and refused when
    # that lists it.
    crl_server.publish(
        "/root.crl",
        world.ca.crl(issuer="root", revoked=[(world.ca.intermediate.serial_number, None)]),
    )
    with app.app_context():
        # The failed fetch blocks retries for a minute in this process; forget it.
        app.extensions.pop("tax_crl_cache")
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOKED
    assert "issuing CA" in refusal.message


def test_a_stored_issuer_crl_is_always_used(app: Flask, readme: ReadmeWorld) -> None:
    certificate, _ = readme.ca.issue("91350100M000100Y43")
    # The root's CRL, uploaded, lists the intermediate: the intermediate names no CRL DP,
    # but its status is published, so it counts.
    readme.upload_root_crl(app, revoked=[(readme.ca.intermediate.serial_number, KEY_COMPROMISE)])
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOKED
    assert "issuing CA" in refusal.message


def test_a_stale_stored_issuer_crl_fails_closed(app: Flask, readme: ReadmeWorld) -> None:
    certificate, _ = readme.ca.issue("91350100M000100Y43")
    now = utcnow()
    readme.upload_root_crl(
        app, this_update=now - dt.timedelta(days=8), next_update=now - dt.timedelta(days=1)
    )
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOCATION_UNKNOWN
    assert "Test Tax Bureau Root CA" in refusal.message
    assert "out of date since" in refusal.message


def test_an_issuer_with_a_crl_url_is_checked(
    app: Flask, readme: ReadmeWorld, crl_server: CrlServer
) -> None:
    certificate, _ = readme.ca.issue("91350100M000100Y43")
    # The root now has a CRL URL (where it publishes), which does not answer: its CRL is
    # meant to be fetchable, so the intermediate's status is looked up, and unknown.
    url = crl_server.fail("/root-elsewhere.crl", 404)
    with app.app_context():
        set_crl_url(actor="tests", anchor_id=readme.root_id, url=url)
        db.session.commit()
    refusal = refusal_of(app, certificate)
    assert refusal.refusal is Refusal.REVOCATION_UNKNOWN
    assert "HTTP 404" in refusal.message


def test_an_enabled_intermediate_anchors_the_path_when_its_root_is_disabled(
    app: Flask,
    client: FlaskClient,
    readme: ReadmeWorld,
    api_employer: Callable[[], ApiEmployer],  # noqa: F811
) -> None:
    employer = api_employer()
    certificate, key = readme.ca.issue(employer.account.number)
    # Under require the root's missing CRL refuses the path through the root ...
    readme.set_policy(app, readme.root_id, RevocationPolicy.REQUIRE)
    readme.set_policy(app, readme.intermediate_id, RevocationPolicy.REQUIRE)
    refused(bind(client, employer, certificate, key), "revocation_unknown")
    # ... the root disabled, the path ends at the intermediate: nothing above it to check.
    readme.set_enabled(app, readme.root_id, False)
    assert verify(app, certificate).chain == (certificate, readme.ca.intermediate)
    assert bind(client, employer, certificate, key).status_code == 201
    login = tax_login(client, certificate, key)
    assert login.status_code == 201, login.get_data(as_text=True)
    # The taxpayer's own CRL still counts.
    readme.upload_intermediate_crl(app, [(certificate.serial_number, KEY_COMPROMISE)])
    refused(tax_login(client, certificate, key), "revoked")
    # With the intermediate disabled too, nothing trusted issued the certificate.
    readme.set_enabled(app, readme.intermediate_id, False)
    assert refusal_of(app, certificate).refusal is Refusal.UNTRUSTED


def test_paths_end_at_the_root_while_it_is_enabled(app: Flask, readme: ReadmeWorld) -> None:
    # The intermediate is an anchor of its own only while the root that issued it is not
    # trusted: below an enabled root it only helps build paths (and is checked on the root's
    # CRL when one is published).
    certificate, _ = readme.ca.issue("91350100M000100Y43")
    assert verify(app, certificate).chain[-1] == readme.ca.root
    readme.set_enabled(app, readme.root_id, False)
    assert verify(app, certificate).chain[-1] == readme.ca.intermediate
    readme.set_enabled(app, readme.root_id, True)
    assert verify(app, certificate).chain[-1] == readme.ca.root


def test_policy_changes_are_audited_with_old_and_new_value(app: Flask, readme: ReadmeWorld) -> None:
    readme.set_policy(app, readme.root_id, RevocationPolicy.REQUIRE)
    readme.set_policy(app, readme.root_id, RevocationPolicy.REQUIRE)  # no change: no event
    readme.set_policy(app, readme.root_id, RevocationPolicy.WHEN_PUBLISHED)
    with app.app_context():
        events = db.session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.action == "trust.revocation_policy_set")
            .order_by(AuditEvent.seq)
        ).all()
        details = [
            (e.actor, json.loads(e.details)["previous"], json.loads(e.details)["revocation_policy"])
            for e in events
        ]
    assert details == [
        ("tests", "when-published", "require"),
        ("tests", "require", "when-published"),
    ]


# -- the migration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} not set"),
            ],
        ),
    ],
)
def test_the_migration_gives_existing_anchors_the_default_policy(
    tmp_path: Path, backend: str
) -> None:
    if backend == "sqlite":
        _migration_check(f"sqlite:///{tmp_path / 'old.db'}")
        return
    server = os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1)
    with _scratch_postgres_database(server) as url:
        _migration_check(url)


def _migration_check(url: str) -> None:
    upgrade_database(url, "0008_blocked_keys")
    ca = TaxCA()
    engine = sa.create_engine(url)
    insert = sa.text(
        "INSERT INTO trust_anchors (purpose, subject, fingerprint_sha256, der, not_after,"
        " enabled, added_by, created_at) VALUES ('tax', :subject, :fp, :der, :after, :enabled,"
        " 'tests', :now)"
    )
    values = {
        "subject": "CN=old",
        "der": ca.root_der,
        "after": utcnow() + dt.timedelta(days=1),
        "enabled": True,
        "now": utcnow(),
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert, {**values, "fp": "a" * 64})
        upgrade_database(url)
        with engine.connect() as conn:
            policies = conn.execute(sa.text("SELECT revocation_policy FROM trust_anchors")).all()
        assert policies == [("when-published",)]
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("UPDATE trust_anchors SET revocation_policy = 'sometimes'"))
        command.downgrade(alembic_config(url), "0008_blocked_keys")
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("trust_anchors")}
        assert "revocation_policy" not in columns
        upgrade_database(url)
    finally:
        engine.dispose()
