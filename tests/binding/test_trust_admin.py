"""Trust anchors and their CRLs managed by CA administrators: the `/admin/trust` page (role
checked, CSRF-protected, every refusal a flash message with its status) and the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ca_service.audit.models import AuditEvent
from ca_service.auth.models import Role, User
from ca_service.binding import service
from ca_service.binding.models import RevocationPolicy, TaxCrl, TrustAnchor, TrustPurpose
from ca_service.binding.service import add_trust_anchor
from ca_service.db import db
from ca_service.errors import Forbidden
from tests.auth.flows import CSRF, csrf_token, login
from tests.binding.conftest import CrlServer, StaffClient, TrustedTaxCA
from tests.binding.tax_ca import TaxCA, crl_pem
from tests.conftest import CliInvoke, MakeUser
from tests.issuance.seal_factory import make_seal_ca

PAGE = "/admin/trust/"


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def post(client: FlaskClient, path: str, data: dict[str, object] | None = None) -> TestResponse:
    """Post a form of the page with its CSRF token (files as (bytes, name) pairs)."""
    form: dict[str, object] = {"csrf_token": csrf_token(client, PAGE)}
    for name, value in (data or {}).items():
        if isinstance(value, tuple):
            content, filename = value
            form[name] = (io.BytesIO(content), filename)
        else:
            form[name] = value
    return client.post(path, data=form, content_type="multipart/form-data")


def anchors(app: Flask) -> list[TrustAnchor]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(TrustAnchor).order_by(TrustAnchor.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def stored_crl(app: Flask, anchor_id: int) -> TaxCrl | None:
    with app.app_context():
        row = db.session.scalar(sa.select(TaxCrl).where(TaxCrl.anchor_id == anchor_id))
        if row is not None:
            db.session.expunge(row)
        return row


# -- the page --------------------------------------------------------------------------------


def test_only_ca_administrators_see_the_page(
    app: Flask, staff_client: StaffClient, make_user: MakeUser, client: FlaskClient
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    page = admin.get(PAGE)
    assert page.status_code == 200
    body = text(page)
    assert "Trust anchors" in body
    assert len(CSRF.findall(body)) >= 1  # the add form at least

    officer = staff_client(Role.RA_OFFICER)
    assert officer.get(PAGE).status_code == 403
    refused = officer.post(
        "/admin/trust/add",
        data={"csrf_token": csrf_token(officer, "/auth/home"), "purpose": "tax"},
    )
    assert refused.status_code == 403

    user, password = make_user(role=Role.EMPLOYER_ADMIN)
    employer = app.test_client()
    assert login(employer, user.username, password).status_code == 302
    assert employer.get(PAGE).status_code == 403

    anonymous = client.get(PAGE)
    assert anonymous.status_code == 302
    assert "/auth/login" in anonymous.headers["Location"]
    assert anchors(app) == []


def test_the_services_check_the_role_too(
    app: Flask, trusted_tax_ca: TrustedTaxCA, make_user: MakeUser
) -> None:
    officer, _ = make_user(role=Role.RA_OFFICER)
    with app.app_context():
        user = db.session.get(User, officer.id)
        assert user is not None
        with pytest.raises(Forbidden):
            service.set_anchor_enabled(actor=user, anchor_id=trusted_tax_ca.root_id, enabled=False)
        with pytest.raises(Forbidden):
            service.set_crl_url(actor=user, anchor_id=trusted_tax_ca.root_id, url=None)


def test_administrator_adds_anchors_and_manages_their_crls(
    app: Flask, staff_client: StaffClient, tax_ca: TaxCA, crl_server: CrlServer
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    root_url = crl_server.publish("/tax/root.crl", tax_ca.crl(issuer="root"))

    added = post(
        admin,
        "/admin/trust/add",
        {"purpose": "tax", "certificate": (tax_ca.root_pem, "root.pem"), "crl_url": root_url},
    )
    assert added.status_code == 302, text(added)
    added = post(
        admin,
        "/admin/trust/add",
        {"purpose": "tax", "certificate": (tax_ca.intermediate_der, "issuing.cer")},
    )
    assert added.status_code == 302, text(added)
    page = text(admin.get(PAGE))
    assert "is now a tax trust anchor" in page
    assert "Set its CRL URL or upload its CRL" in page
    assert tax_ca.root.subject.rfc4514_string() in page
    root, intermediate = anchors(app)
    assert root.crl_url == root_url
    assert intermediate.crl_url is None  # not the root's URL from the certificate's CRL DP
    assert page.count("missing") >= 2

    # Fetch the root's CRL now.
    fetched = post(admin, f"/admin/trust/{root.id}/crl/fetch")
    assert fetched.status_code == 302, text(fetched)
    page = text(admin.get(PAGE))
    assert "Fetched the CRL from" in page
    assert "current" in page
    crl = stored_crl(app, root.id)
    assert crl is not None
    assert crl.source == root_url

    # The intermediate's CRL: uploaded, then its URL set and fetched.
    uploaded = post(
        admin,
        f"/admin/trust/{intermediate.id}/crl",
        {"crl": (crl_pem(tax_ca.crl(number=3)), "issuing.crl")},
    )
    assert uploaded.status_code == 302, text(uploaded)
    assert "The CRL is stored: number 3" in text(admin.get(PAGE))
    crl = stored_crl(app, intermediate.id)
    assert crl is not None
    assert crl.source.startswith("upload:user:")

    url = crl_server.publish("/tax/intermediate.crl", tax_ca.crl(number=4))
    saved = post(admin, f"/admin/trust/{intermediate.id}/crl-url", {"crl_url": url})
    assert saved.status_code == 302, text(saved)
    assert f"publishes its CRL at {url}" in text(admin.get(PAGE))
    assert post(admin, f"/admin/trust/{intermediate.id}/crl/fetch").status_code == 302
    crl = stored_crl(app, intermediate.id)
    assert crl is not None
    assert crl.crl_number == "4"

    # Disable and enable.
    disabled = post(admin, f"/admin/trust/{intermediate.id}/disable")
    assert disabled.status_code == 302
    assert "is disabled" in text(admin.get(PAGE))
    assert not anchors(app)[1].enabled
    assert post(admin, f"/admin/trust/{intermediate.id}/enable").status_code == 302
    assert anchors(app)[1].enabled

    with app.app_context():
        actions = list(
            db.session.scalars(
                sa.select(AuditEvent.action)
                .where(AuditEvent.action.like("trust.%"))
                .order_by(AuditEvent.seq)
            )
        )
        actors = set(db.session.scalars(sa.select(AuditEvent.actor)))
    assert actions == [
        "trust.anchor_added",
        "trust.anchor_added",
        "trust.crl_stored",
        "trust.crl_stored",
        "trust.crl_url_set",
        "trust.crl_stored",
        "trust.anchor_disabled",
        "trust.anchor_enabled",
    ]
    assert all(a.startswith("user:") for a in actors if a != "crl-fetch")


def _flash(response: TestResponse) -> str:
    match = re.search(r'<div class="flash error" role="alert">([^<]*)</div>', text(response))
    assert match, text(response)
    return match.group(1)


def test_every_refusal_is_a_flash_message_with_its_status(
    app: Flask, staff_client: StaffClient, trusted_tax_ca: TrustedTaxCA, crl_server: CrlServer
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    tax = trusted_tax_ca.ca
    leaf, _ = tax.issue("NTRCN-911100006000373411")
    leaf_pem = leaf.public_bytes(Encoding.PEM)
    root_id, intermediate_id = trusted_tax_ca.root_id, trusted_tax_ca.intermediate_id

    cases: list[tuple[str, dict[str, object], int, str]] = [
        (
            "/admin/trust/add",
            {"purpose": "tax", "certificate": (leaf_pem, "leaf.pem")},
            400,
            "is not a CA certificate",
        ),
        (
            "/admin/trust/add",
            {"purpose": "tax", "certificate": (b"junk", "x.pem")},
            400,
            "not an X.509 certificate",
        ),
        (
            "/admin/trust/add",
            {"purpose": "tax", "certificate": (tax.root_pem, "root.pem")},
            409,
            "already a tax trust anchor",
        ),
        (
            "/admin/trust/add",
            {
                "purpose": "tax",
                "certificate": (TaxCA("X").root_pem, "x.pem"),
                "crl_url": "ftp://crl.example/x.crl",
            },
            400,
            "must be an http:// or https:// URL",
        ),
        ("/admin/trust/add", {"purpose": "tax"}, 400, "Choose the CA certificate file."),
        (
            f"/admin/trust/{root_id}/crl-url",
            {"crl_url": "http://[::1/x.crl"},
            400,
            "must be an http:// or https:// URL",
        ),
        (
            f"/admin/trust/{root_id}/crl-url",
            {"crl_url": "javascript:alert(1)"},
            400,
            "must be an http:// or https:// URL",
        ),
        (
            f"/admin/trust/{intermediate_id}/crl",
            {"crl": (b"not a crl", "x.crl")},
            400,
            "is not a certificate revocation list",
        ),
        (
            f"/admin/trust/{intermediate_id}/crl",
            {"crl": (tax.crl(issuer="root"), "x.crl")},
            400,
            "was issued by",
        ),
        ("/admin/trust/999999/disable", {}, 404, "There is no trust anchor 999999."),
        ("/admin/trust/999999/crl", {"crl": (tax.crl(), "x.crl")}, 404, "no trust anchor"),
    ]
    for path, data, status, message in cases:
        response = post(admin, path, data)
        assert response.status_code == status, (path, text(response))
        assert message in _flash(response), path
    assert len(anchors(app)) == 2

    # A failed fetch is kept on the stored CRL although the response is an error.
    with app.app_context():
        anchor = db.session.get(TrustAnchor, intermediate_id)
        assert anchor is not None
        anchor.crl_url = crl_server.fail("/tax/intermediate.crl", 500)
        db.session.commit()
    assert (
        post(
            admin, f"/admin/trust/{intermediate_id}/crl", {"crl": (tax.crl(), "i.crl")}
        ).status_code
        == 302
    )
    failed = post(admin, f"/admin/trust/{intermediate_id}/crl/fetch")
    assert failed.status_code == 502
    assert "HTTP 500" in _flash(failed)
    crl = stored_crl(app, intermediate_id)
    assert crl is not None
    assert crl.last_error is not None
    assert "HTTP 500" in crl.last_error
    assert "Last fetch failed" in text(admin.get(PAGE))

    # No CRL URL to fetch from.
    with app.app_context():
        anchor = db.session.get(TrustAnchor, intermediate_id)
        assert anchor is not None
        anchor.crl_url = None
        db.session.commit()
    no_url = post(admin, f"/admin/trust/{intermediate_id}/crl/fetch")
    assert no_url.status_code == 400
    assert "has no CRL URL" in _flash(no_url)


def test_forms_without_a_csrf_token_are_refused(
    app: Flask, staff_client: StaffClient, trusted_tax_ca: TrustedTaxCA
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    for path in (
        "/admin/trust/add",
        f"/admin/trust/{trusted_tax_ca.root_id}/disable",
        f"/admin/trust/{trusted_tax_ca.root_id}/crl-url",
        f"/admin/trust/{trusted_tax_ca.root_id}/crl/fetch",
    ):
        response = admin.post(path, data={"purpose": "tax", "crl_url": "http://evil.test/x"})
        assert response.status_code == 400, path
    root = anchors(app)[0]
    assert root.enabled
    assert root.crl_url == trusted_tax_ca.ca.root_crl_url


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_manages_tax_anchors_and_crls(
    app: Flask, cli: CliInvoke, tmp_path: Path, tax_ca: TaxCA, crl_server: CrlServer
) -> None:
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(tax_ca.root_pem)
    intermediate_der = tmp_path / "issuing.cer"
    intermediate_der.write_bytes(tax_ca.intermediate_der)
    root_url = crl_server.publish("/tax/root.crl", tax_ca.crl(issuer="root"))

    added = cli("trust", "add", "--purpose", "tax", str(root_pem), "--crl-url", root_url)
    assert added.exit_code == 0, added.output
    assert f"CRL URL {root_url}" in added.output
    added = cli("trust", "add", "--purpose", "tax", str(intermediate_der))
    assert added.exit_code == 0, added.output
    assert "no CRL URL" in added.output
    refused = cli("trust", "add", "--purpose", "tax", str(root_pem), "--crl-url", "file:///x")
    assert refused.exit_code == 1
    assert "must be an http:// or https:// URL" in refused.output
    root_id, intermediate_id = (str(a.id) for a in anchors(app))

    listing = cli("trust", "list")
    assert listing.exit_code == 0, listing.output
    rows = listing.output.splitlines()
    assert rows[0].split()[:5] == ["ID", "PURPOSE", "ENABLED", "NOT_AFTER", "CRL"]
    assert rows[1].split()[0] == root_id
    assert rows[1].split()[4] == "missing"
    assert f"anchor {root_id} CRL URL: {root_url}" in listing.output

    # An anchor without a URL is skipped by refresh; the others are fetched.
    refreshed = cli("trust", "crl", "refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert f"ok      anchor {root_id}: CRL number 1" in refreshed.output
    assert f"skipped anchor {intermediate_id}: no CRL URL" in refreshed.output

    crl_file = tmp_path / "issuing.crl"
    crl_file.write_bytes(crl_pem(tax_ca.crl(number=8)))
    uploaded = cli("trust", "crl", "upload", intermediate_id, str(crl_file))
    assert uploaded.exit_code == 0, uploaded.output
    assert f"anchor {intermediate_id}: CRL number 8 thisUpdate" in uploaded.output
    older = tmp_path / "older.crl"
    older.write_bytes(tax_ca.crl(number=2))
    refused = cli("trust", "crl", "upload", intermediate_id, str(older))
    assert refused.exit_code == 1
    assert "is older than the stored one" in refused.output
    junk = tmp_path / "junk.crl"
    junk.write_bytes(b"junk")
    refused = cli("trust", "crl", "upload", intermediate_id, str(junk))
    assert refused.exit_code == 1
    assert "is not a certificate revocation list" in refused.output

    url = crl_server.fail("/tax/intermediate.crl", 404)
    assert cli("trust", "crl-url", intermediate_id, url).exit_code == 0
    refreshed = cli("trust", "crl", "refresh")
    assert refreshed.exit_code == 1, refreshed.output
    assert f"FAILED  anchor {intermediate_id}: Could not fetch the CRL of" in refreshed.output
    assert "HTTP 404" in refreshed.output
    assert f"ok      anchor {root_id}" in refreshed.output

    listing = cli("trust", "list", "--purpose", "tax")
    assert listing.exit_code == 0, listing.output
    assert f"anchor {intermediate_id} last CRL fetch failed:" in listing.output
    assert "current" in listing.output

    crl_server.publish("/tax/intermediate.crl", tax_ca.crl(number=9))
    refreshed = cli("trust", "crl", "refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert "last CRL fetch failed" not in cli("trust", "list").output

    cleared = cli("trust", "crl-url", intermediate_id, "--clear")
    assert cleared.exit_code == 0, cleared.output
    assert "CRL URL: (none)" in cleared.output
    assert cli("trust", "crl-url", intermediate_id).exit_code == 2  # a URL or --clear
    missing = cli("trust", "crl-url", "999999", "http://x.test/y.crl")
    assert missing.exit_code == 1
    assert "There is no trust anchor 999999." in missing.output
    assert anchors(app)[1].crl_url is None
    assert [a.purpose for a in anchors(app)] == [TrustPurpose.TAX, TrustPurpose.TAX]


# -- revocation policies ---------------------------------------------------------------------


def _seal_pem(name: str) -> bytes:
    ca = make_seal_ca(name, now=dt.datetime.now(dt.UTC))
    return ca.certificate.public_bytes(Encoding.PEM)


def _policy_events(app: Flask) -> list[tuple[str, str, str, str]]:
    """(actor, target, previous, new) of every revocation-policy change, oldest first."""
    with app.app_context():
        events = db.session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.action == "trust.revocation_policy_set")
            .order_by(AuditEvent.seq)
        ).all()
        return [
            (
                e.actor,
                e.target,
                json.loads(e.details)["previous"],
                json.loads(e.details)["revocation_policy"],
            )
            for e in events
        ]


def test_administrator_sets_the_revocation_policy_on_the_page(
    app: Flask, staff_client: StaffClient, trusted_tax_ca: TrustedTaxCA
) -> None:
    admin = staff_client(Role.CA_ADMIN)
    root_id = trusted_tax_ca.root_id
    page = text(admin.get(PAGE))
    assert f'action="/admin/trust/{root_id}/revocation-policy"' in page
    assert "Revocation policy (now: when-published)" in page
    assert '<option value="when-published" selected>' in page

    changed = post(
        admin, f"/admin/trust/{root_id}/revocation-policy", {"revocation_policy": "require"}
    )
    assert changed.status_code == 302, text(changed)
    page = text(admin.get(PAGE))
    assert "The revocation policy of " in page
    assert "is require." in page
    assert "Revocation policy (now: require)" in page
    assert anchors(app)[0].revocation_policy is RevocationPolicy.REQUIRE
    assert anchors(app)[1].revocation_policy is RevocationPolicy.WHEN_PUBLISHED
    [(actor, target, previous, new)] = _policy_events(app)
    assert actor.startswith("user:")
    assert target == anchors(app)[0].fingerprint_sha256
    assert (previous, new) == ("when-published", "require")

    # Refusals: an unknown value, an unknown anchor, no CSRF token, a seal anchor.
    bad = post(admin, f"/admin/trust/{root_id}/revocation-policy", {"revocation_policy": "never"})
    assert bad.status_code == 400
    assert "Revocation policy: Not a valid choice" in _flash(bad)
    missing = post(admin, "/admin/trust/999999/revocation-policy", {"revocation_policy": "require"})
    assert missing.status_code == 404
    assert "There is no trust anchor 999999." in _flash(missing)
    forged = admin.post(
        f"/admin/trust/{root_id}/revocation-policy", data={"revocation_policy": "when-published"}
    )
    assert forged.status_code == 400
    with app.app_context():
        seal = add_trust_anchor(
            actor="tests",
            purpose=TrustPurpose.SEAL,
            data=_seal_pem("Seal Root For Policies"),
        )
        db.session.commit()
        seal_id = seal.id
    seal_refused = post(
        admin, f"/admin/trust/{seal_id}/revocation-policy", {"revocation_policy": "require"}
    )
    assert seal_refused.status_code == 400
    assert "revocation policies apply to tax anchors only" in _flash(seal_refused)
    assert anchors(app)[0].revocation_policy is RevocationPolicy.REQUIRE
    assert len(_policy_events(app)) == 1


def test_only_ca_administrators_set_revocation_policies(
    app: Flask, staff_client: StaffClient, trusted_tax_ca: TrustedTaxCA, make_user: MakeUser
) -> None:
    officer = staff_client(Role.RA_OFFICER)
    refused = officer.post(
        f"/admin/trust/{trusted_tax_ca.root_id}/revocation-policy",
        data={"csrf_token": csrf_token(officer, "/auth/home"), "revocation_policy": "require"},
    )
    assert refused.status_code == 403
    user, _ = make_user(role=Role.RA_OFFICER)
    with app.app_context():
        acting_user = db.session.get(User, user.id)
        assert acting_user is not None
        with pytest.raises(Forbidden):
            service.set_revocation_policy(
                actor=acting_user,
                anchor_id=trusted_tax_ca.root_id,
                policy=RevocationPolicy.REQUIRE,
            )
    assert anchors(app)[0].revocation_policy is RevocationPolicy.WHEN_PUBLISHED
    assert _policy_events(app) == []


def test_cli_sets_and_lists_revocation_policies(
    app: Flask, cli: CliInvoke, tmp_path: Path, tax_ca: TaxCA
) -> None:
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(tax_ca.root_pem)
    intermediate_pem = tmp_path / "issuing.pem"
    intermediate_pem.write_bytes(tax_ca.intermediate_pem)
    added = cli("trust", "add", "--purpose", "tax", "--revocation-policy", "require", str(root_pem))
    assert added.exit_code == 0, added.output
    assert "revocation policy require" in added.output
    added = cli("trust", "add", "--purpose", "tax", str(intermediate_pem))
    assert added.exit_code == 0, added.output
    assert "revocation policy when-published" in added.output
    root, intermediate = anchors(app)
    assert root.revocation_policy is RevocationPolicy.REQUIRE
    assert intermediate.revocation_policy is RevocationPolicy.WHEN_PUBLISHED

    listing = cli("trust", "list")
    assert listing.exit_code == 0, listing.output
    rows = listing.output.splitlines()
    assert rows[0].split()[:6] == ["ID", "PURPOSE", "ENABLED", "NOT_AFTER", "CRL", "REVOCATION"]
    assert rows[1].split()[5] == "require"
    assert rows[2].split()[5] == "when-published"

    # By fingerprint (colons allowed) or a prefix of it; by number.
    colons = ":".join(root.fingerprint_sha256[i : i + 2] for i in range(0, 64, 2))
    changed = cli("trust", "policy", colons, "when-published")
    assert changed.exit_code == 0, changed.output
    assert f"trust anchor {root.id} revocation policy: require -> when-published" in changed.output
    again = cli("trust", "policy", root.fingerprint_sha256[:12], "when-published")
    assert again.exit_code == 0, again.output
    assert "is already when-published" in again.output
    assert cli("trust", "policy", str(intermediate.id), "require").exit_code == 0
    assert [a.revocation_policy for a in anchors(app)] == [
        RevocationPolicy.WHEN_PUBLISHED,
        RevocationPolicy.REQUIRE,
    ]
    assert [(e[1], e[2], e[3]) for e in _policy_events(app)] == [
        (root.fingerprint_sha256, "require", "when-published"),
        (intermediate.fingerprint_sha256, "when-published", "require"),
    ]
    assert {e[0] for e in _policy_events(app)} == {"cli"}

    unknown = cli("trust", "policy", "999999", "require")
    assert unknown.exit_code == 1
    assert "There is no trust anchor 999999." in unknown.output
    not_hex = cli("trust", "policy", "not-a-fingerprint", "require")
    assert not_hex.exit_code == 1
    assert "There is no trust anchor 'not-a-fingerprint'." in not_hex.output
    assert cli("trust", "policy", str(root.id), "sometimes").exit_code == 2
    seal_pem = tmp_path / "seal.pem"
    seal_pem.write_bytes(_seal_pem("Seal Root For CLI Policies"))
    seal_flag = cli(
        "trust", "add", "--purpose", "seal", "--revocation-policy", "require", str(seal_pem)
    )
    assert seal_flag.exit_code == 2
    assert "applies to tax anchors only" in seal_flag.output
    assert cli("trust", "add", "--purpose", "seal", str(seal_pem)).exit_code == 0
    seal_id = str(anchors(app)[2].id)
    seal_policy = cli("trust", "policy", seal_id, "require")
    assert seal_policy.exit_code == 1
    assert "revocation policies apply to tax anchors only" in seal_policy.output
    assert cli("trust", "list").output.splitlines()[3].split()[5] == "n/a"
    assert len(_policy_events(app)) == 2
