"""Every route, tried as every role, signed out, and as another employer: each protected route
lets in only the roles it is for (the others get 403, signed-out visitors the sign-in page or a
401), another employer's application, document or certificate is a 404, and nothing is a 500.
A new route fails this test until it is placed in the table below."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from ca_service.auth.models import Role
from ca_service.db import db
from ca_service.issuance.models import Application, Document
from tests.api.conftest import bearer, request_token, token_of
from tests.auth.flows import (
    MakeOfficer,
    code_at,
    csrf_token,
    enter_code,
    enter_sms_code,
    location,
    login,
    sms_code_for,
)
from tests.employers.operator_support import make_operator
from tests.issuance.conftest import MakeEmployer, employer_login, issue_employer_certificate

EMP = frozenset({Role.EMPLOYER_ADMIN})  # the employer's administrator only
# The administrator and the employer's HR operators (who never revoke, bind or manage).
MEMBERS = frozenset({Role.EMPLOYER_ADMIN, Role.EMPLOYER_OPERATOR})
RA = frozenset({Role.RA_OFFICER})
OFFICERS = frozenset({Role.RA_OFFICER, Role.CA_ADMIN})
CA = frozenset({Role.CA_ADMIN})
READERS = frozenset({Role.AUDITOR, Role.CA_ADMIN})
ANY = frozenset(Role)
PUBLIC: frozenset[Role] = frozenset()  # no sign-in needed

# Who each endpoint is for. PUBLIC routes are only checked for "no 500".
ACCESS: dict[str, frozenset[Role]] = {
    "web.index": PUBLIC,
    "static": PUBLIC,  # the stylesheet
    "bindings.index": EMP,
    "bindings.unbind": EMP,
    "bindings.bind_tls": EMP,
    "trust_admin.index": CA,
    "trust_admin.upload_crl": CA,
    "trust_admin.crl_url": CA,
    "trust_admin.fetch_crl": CA,
    "trust_admin.disable": CA,
    "trust_admin.enable": CA,
    "trust_admin.add": CA,
    "trust_admin.revocation_policy": CA,
    "api.list_applications": MEMBERS,
    "api.create_application": MEMBERS,
    "api.get_application": MEMBERS,
    "api.download_certificate": MEMBERS,
    "api.put_csr": MEMBERS,
    "api.upload_document": MEMBERS,
    "api.revoke_own_certificate": EMP,
    "api.submit_application": MEMBERS,
    "api.certificate_login": PUBLIC,
    "api.create_challenge": PUBLIC,
    "api.tls_token": PUBLIC,
    "api.create_token": PUBLIC,
    "api.revoke_token": ANY,
    "api.list_bindings": EMP | OFFICERS,
    "api.bind": PUBLIC,  # the bind challenge names the account; no bearer token
    "api.unbind": EMP | OFFICERS,
    "api.list_certificates": MEMBERS,
    "api.renew_certificate": MEMBERS,
    "api.renewal_info": PUBLIC,
    "api.certificate_status": PUBLIC,
    "api.register": PUBLIC,
    "api.confirm_employer_mobile": PUBLIC,
    "api.resend_mobile_code": PUBLIC,
    "api.openapi": PUBLIC,
    "api.review_queue": RA,
    "api.review_application": RA,
    "api.approve_application": RA,
    "api.attest_document": RA,
    "api.set_document_validity": RA,
    "api.issue_application": RA,
    "api.reject_application": RA,
    "api.revoke_certificate": OFFICERS,
    "issuance_employer.index": MEMBERS,
    "issuance_employer.detail": MEMBERS,
    "issuance_employer.download": MEMBERS,
    "issuance_employer.upload": MEMBERS,
    "issuance_employer.employer_document": MEMBERS,
    "issuance_employer.notice": MEMBERS,
    "issuance_employer.attach_request": MEMBERS,
    "revocation_portal.employer_revoke": EMP,
    "issuance_employer.submit": MEMBERS,
    "issuance_employer.create": MEMBERS,
    "audit.events": READERS,
    "auth.cancel": PUBLIC,
    "auth.certificate_login": PUBLIC,
    "auth.certificate_tls": PUBLIC,
    "auth.confirm_mobile": PUBLIC,
    "auth.resend_mobile_code": PUBLIC,
    "auth.home": ANY,
    "auth.login": PUBLIC,
    "auth.logout": ANY,
    "auth.change_password": ANY,
    "auth.reset_request": PUBLIC,
    "auth.reset_confirm": PUBLIC,
    "auth.set_password": PUBLIC,
    "auth.sms_code": PUBLIC,
    "auth.resend_sms_code": PUBLIC,
    "auth.totp_code": PUBLIC,
    "auth.totp_enrol": PUBLIC,
    "employers.register": PUBLIC,
    "operators.index": EMP,
    "operators.create": EMP,
    "operators.remove": EMP,
    "operators.accept_invitation": PUBLIC,
    "revocation.ocsp_post": PUBLIC,
    "revocation.ocsp_get": PUBLIC,
    "issuance_officer.queue": RA,
    "issuance_officer.review": RA,
    "issuance_officer.approve": RA,
    "issuance_officer.officer_document": RA,
    "issuance_officer.attest": RA,
    "issuance_officer.validity": RA,
    "issuance_officer.issue": RA,
    "issuance_officer.reject": RA,
    "officer_bindings.lookup": OFFICERS,
    "officer_bindings.officer_unbind": OFFICERS,
    "revocation_portal.officer_revoke": OFFICERS,
    "revocation_portal.find_certificates": OFFICERS,
    "expiry_officer.expiring": OFFICERS,
    "authorities.repository": PUBLIC,
    "authorities.certificate_der": PUBLIC,
    "authorities.certificate_pem": PUBLIC,
    "revocation.crl": PUBLIC,
    "renewal.index": MEMBERS,
    "renewal.renew_page": MEMBERS,
    "renewal.renew": MEMBERS,
    "issuance_public.verify": PUBLIC,
    "language.switch": PUBLIC,
}
# Ending the session or token under test would spoil the rows after it; they are tried signed
# out only (their own tests cover them signed in).
SESSION_ENDERS = {"auth.logout", "api.revoke_token", "auth.cancel"}
# Parameters that name another employer's records.
FOREIGN = ("application_id", "document_id", "serial")


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    path: str
    foreign: bool  # names employer B's records


@dataclass
class Identity:
    name: str
    role: Role | None
    web: FlaskClient
    api_headers: dict[str, str]
    csrf: str


def _routes(app: Flask, values: dict[str, str]) -> list[Route]:
    routes = []
    for rule in app.url_map.iter_rules():
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(rf"<(?:[^:<>]+:)?{name}>|<any\([^)]*\):{name}>", values[name], path)
        foreign = any(name in rule.arguments for name in FOREIGN)
        routes += [Route(rule.endpoint, method, path, foreign) for method in methods]
    return routes


def _call(identity: Identity, route: Route) -> tuple[int, str]:
    if route.path.startswith("/api/"):
        response = identity.web.open(
            route.path, method=route.method, json={}, headers=identity.api_headers
        )
    elif route.method == "GET":
        response = identity.web.get(route.path)
    else:
        data = {"csrf_token": identity.csrf} if identity.csrf else {}
        response = identity.web.open(route.path, method=route.method, data=data)
    with response:  # closes a streamed file (the static stylesheet)
        return response.status_code, response.headers.get("Location", "")


def _staff(app: Flask, make_officer: MakeOfficer, role: Role) -> Identity:
    staff = make_officer(role)
    web = app.test_client()
    login(web, staff.user.username, staff.password)
    assert enter_code(web, code_at(staff.seed)).status_code == 302
    token = token_of(
        request_token(
            app.test_client(), staff.user.username, staff.password, code_at(staff.seed, 1)
        )
    )
    return Identity(role.value, role, web, bearer(token), csrf_token(web, "/auth/home"))


@pytest.fixture
def identities(
    app: Flask, make_employer: MakeEmployer, make_officer: MakeOfficer
) -> tuple[list[Identity], dict[str, str]]:
    owner = make_employer()
    issued = issue_employer_certificate(app, owner, make_officer().user.id)
    with app.app_context():
        application = db.session.get(Application, issued.application_id)
        assert application is not None
        document = db.session.scalar(
            sa.select(Document).where(Document.application_id == application.id).limit(1)
        )
        assert document is not None
        values = {
            "application_id": str(application.id),
            "document_id": str(document.id),
            "serial": issued.serial,
            "binding_id": "999999",
            "anchor_id": "999999",
            "slug": "employer",
            "encoded": base64.urlsafe_b64encode(b"\x30\x03\x02\x01\x00").decode(),
            "name": "certificate.pem",
            "operator_id": "999999",
            "user_id": "999999",
            "secret": "not-a-secret",
            "filename": "css/app.css",
        }
    other = make_employer()
    web = employer_login(app.test_client(), other)
    token = token_of(request_token(app.test_client(), other.username, other.password))
    operator = make_operator(app, other)
    operator_web = app.test_client()
    assert location(login(operator_web, operator.username, operator.password)) == "/auth/sms-code"
    code = sms_code_for(app, operator.user_id)
    assert location(enter_sms_code(operator_web, code)) == "/auth/home"
    operator_token = token_of(
        request_token(app.test_client(), operator.username, operator.password)
    )
    anonymous = app.test_client()
    people = [
        Identity("signed out", None, anonymous, {}, csrf_token(anonymous, "/auth/login")),
        Identity(
            "another employer",
            Role.EMPLOYER_ADMIN,
            web,
            bearer(token),
            csrf_token(web, "/auth/home"),
        ),
        Identity(
            "another employer's HR operator",
            Role.EMPLOYER_OPERATOR,
            operator_web,
            bearer(operator_token),
            csrf_token(operator_web, "/auth/home"),
        ),
        *(
            _staff(app, make_officer, role)
            for role in (Role.RA_OFFICER, Role.CA_ADMIN, Role.AUDITOR)
        ),
    ]
    return people, values


def test_every_route_is_in_the_table(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - ACCESS.keys() == set(), "place new routes in ACCESS"
    assert ACCESS.keys() - endpoints == set(), "remove routes that are gone from ACCESS"


def test_each_route_lets_in_only_its_roles(
    app: Flask, identities: tuple[list[Identity], dict[str, str]]
) -> None:
    people, values = identities
    wrong: list[str] = []
    for route in _routes(app, values):
        allowed = ACCESS[route.endpoint]
        for person in people:
            if person.role is not None and route.endpoint in SESSION_ENDERS:
                continue
            status, location = _call(person, route)
            seen = f"{route.method} {route.path} as {person.name}: {status} {location}"
            if status >= 500:
                wrong.append(f"{seen} (a server error)")
            elif not allowed:
                continue
            elif person.role is None:
                api = route.path.startswith("/api/")
                if not (status == 401 if api else status == 302 and "/auth/login" in location):
                    wrong.append(f"{seen} (signed out: expected the sign-in)")
            elif person.role not in allowed:
                if status != 403:
                    wrong.append(f"{seen} (expected 403)")
            elif person.role in MEMBERS and route.foreign:
                if status != 404:
                    wrong.append(f"{seen} (another employer's record: expected 404)")
            elif status in (401, 403):
                wrong.append(f"{seen} (refused a role it is for)")
    assert not wrong, "\n".join(wrong)


# Agency pages every staff role reaches from its home page (/auth/home): each GET page of the
# console without parameters that the role may use. CA administrators do not review
# applications (separation of duties, README "Roles"): the queue is refused and not linked.
CONSOLE_PREFIXES = ("/officer/", "/admin/", "/audit/")


def test_staff_home_pages_link_to_every_console_page_of_the_role(
    app: Flask, make_officer: MakeOfficer
) -> None:
    pages = {
        rule.endpoint: rule.rule
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or set())
        and not rule.arguments
        and rule.rule.startswith(CONSOLE_PREFIXES)
    }
    for role in (Role.RA_OFFICER, Role.CA_ADMIN, Role.AUDITOR):
        web = _staff(app, make_officer, role).web
        home = web.get("/auth/home")
        assert home.status_code == 200
        links = set(re.findall(r'href="([^"?#]+)', home.get_data(as_text=True)))
        for endpoint, path in pages.items():
            if role in ACCESS[endpoint]:
                assert path in links, (role, endpoint)
                assert web.get(path).status_code == 200, (role, endpoint)
            else:
                assert web.get(path).status_code == 403, (role, endpoint)
    assert Role.CA_ADMIN not in ACCESS["issuance_officer.queue"]
