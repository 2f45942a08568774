"""Approvals and renewals racing across eight threads (issue #16, scope 1): every approval
and every renewal (half of them superseding, so revocations and CRL publications race too) is
tried by two threads at once, then two threads publish every CRL: nothing is lost or
duplicated, serials and CRL numbers stay unique, the audit chain verifies, and no attempt
ends in anything but a certificate or the service's Conflict ("database is locked",
IntegrityError or any other exception reaching a caller fails the test with its traceback).

The verdict does not depend on timing: the threads meet on a barrier before every round, and
whichever thread wins a pair, the expected end state is the same."""

from __future__ import annotations

import datetime as dt
import random
import threading
import traceback
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from ca_service.auth.models import User
from ca_service.db import db
from ca_service.errors import Conflict
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import renewal, service
from ca_service.issuance.models import (
    Application,
    ApplicationStatus,
)
from ca_service.models import Certificate, CertificateKind, CertificateStatus
from ca_service.revocation.models import PublishedCRL
from ca_service.revocation.service import publish_all_crls
from tests.auth.conftest import make_officer  # noqa: F401  (fixture used below)
from tests.auth.flows import MakeOfficer
from tests.conftest import CliInvoke
from tests.issuance.conftest import (  # noqa: F401  (make_employer: a fixture)
    EmployerAccount,
    Issued,
    MakeEmployer,
    csr_pem,
    issue_employer_certificate,
    make_employer,
    submitted_application,
)

EMPLOYERS = 24  # of each kind: 24 renewals and 24 approvals
THREADS = 8
PAIRS_PER_ROUND = THREADS // 2  # every thread makes one attempt per round
BARRIER_TIMEOUT = 120  # seconds; only ever reached when a thread is stuck (then: broken)


@dataclass(frozen=True)
class Attempt:
    kind: Literal["approve", "renew"]
    target: int  # the application (approve) or the certificate (renew) id
    actor_id: int  # the officer (approve) or the employer's administrator (renew)
    supersede: bool = False  # renew only: revoke the old certificate (and publish a CRL)


def _plan(attempts: list[tuple[Attempt, Attempt]], seed: int) -> list[list[Attempt]]:
    """Each thread's list: in every round, four pairs, each pair's two attempts given to two
    different threads at the same position, so they race. Shuffled with a fixed seed."""
    rng = random.Random(seed)  # noqa: S311  (a test plan, not a secret)
    pairs = attempts[:]
    rng.shuffle(pairs)
    lists: list[list[Attempt]] = [[] for _ in range(THREADS)]
    for start in range(0, len(pairs), PAIRS_PER_ROUND):
        threads = list(range(THREADS))
        rng.shuffle(threads)
        for offset, (first, second) in enumerate(pairs[start : start + PAIRS_PER_ROUND]):
            lists[threads[2 * offset]].append(first)
            lists[threads[2 * offset + 1]].append(second)
    assert len({len(plan) for plan in lists}) == 1  # every thread meets every barrier
    return lists


def _attempt(app: Flask, attempt: Attempt) -> str:
    """Run one attempt in its own app context and session: "issued", "conflict", or the
    traceback of anything else."""
    with app.app_context():
        try:
            actor = db.session.get(User, attempt.actor_id)
            assert actor is not None
            if attempt.kind == "approve":
                application = service.officer_application(
                    officer=actor, application_id=attempt.target
                )
                service.approve_application(
                    officer=actor, application=application, dual_control=False
                )
                service.issue_certificate(
                    application=application,
                    token=app_token(),
                    profile=service.EmployerProfile.from_settings(settings_of(app)),
                    commit=db.session.commit,
                    actor="tests",
                )
            else:
                certificate = db.session.get(Certificate, attempt.target)
                assert certificate is not None
                outcome = renewal.request_renewal(
                    user=actor,
                    certificate=certificate,
                    csr=csr_pem(ec.generate_private_key(ec.SECP256R1())).encode(),
                    supersede=attempt.supersede,
                    contacts_confirmed=False,
                    token=app_token(),
                    settings=settings_of(app),
                    commit=db.session.commit,
                )
                db.session.commit()
                assert outcome.certificate is not None, "renewal was sent to review"
            return "issued"
        except Conflict:
            db.session.rollback()
            return "conflict"
        except Exception:
            db.session.rollback()
            return traceback.format_exc()
        finally:
            db.session.remove()


def _race(app: Flask, plans: list[list[Attempt]]) -> list[tuple[Attempt, str]]:
    barrier = threading.Barrier(THREADS)
    results: list[tuple[Attempt, str]] = []
    broken: list[str] = []

    def work(plan: list[Attempt]) -> None:
        try:
            for attempt in plan:
                # Outside any app context: on SQLite a session's first statement takes the
                # write lock, and a thread holding it here would block the others forever.
                barrier.wait(timeout=BARRIER_TIMEOUT)
                results.append((attempt, _attempt(app, attempt)))
        except BaseException:  # reported below, never a thread left waiting
            barrier.abort()
            broken.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert broken == [], "\n".join(broken)
    return results


def _publish_crls_at_once(app: Flask) -> list[str]:
    """`publish_all_crls` from two threads at once; the tracebacks of any failure."""
    barrier = threading.Barrier(2)
    failures: list[str] = []

    def publish() -> None:
        try:
            barrier.wait(timeout=BARRIER_TIMEOUT)
            with app.app_context():
                try:
                    publish_all_crls(token=app_token(), settings=settings_of(app), actor="tests")
                    db.session.commit()
                finally:
                    db.session.remove()
        except BaseException:
            barrier.abort()
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=publish) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_racing_approvals_and_renewals_lose_and_duplicate_nothing(
    app: Flask,
    cli: CliInvoke,
    make_employer: MakeEmployer,  # noqa: F811
    make_officer: MakeOfficer,  # noqa: F811
) -> None:
    officers = [make_officer().user.id for _ in range(2)]  # two per approval: no dual control
    first: list[Issued] = [
        issue_employer_certificate(app, make_employer(), officers[0]) for _ in range(EMPLOYERS)
    ]
    applicants = [make_employer() for _ in range(EMPLOYERS)]
    applications = [submitted_application(app, account) for account in applicants]
    # Every other renewal supersedes: its revocation re-signs OCSP and publishes CRLs (or
    # coalesces them) while the others issue.
    superseded = {issued.serial for issued in first[::2]}
    pairs = [
        (
            Attempt("approve", application_id, officers[0]),
            Attempt("approve", application_id, officers[1]),
        )
        for application_id in applications
    ] + [
        (
            Attempt("renew", i.certificate_id, i.account.user_id, i.serial in superseded),
            Attempt("renew", i.certificate_id, i.account.user_id, i.serial in superseded),
        )
        for i in first
    ]
    plans = _plan(pairs, seed=16)

    # Inside every first certificate's renewal window (they were issued seconds apart).
    travel = time_machine.travel(min(i.not_after for i in first) - dt.timedelta(days=3), tick=True)
    travel.start()
    try:
        results = _race(app, plans)
        crl_failures = _publish_crls_at_once(app)
    finally:
        travel.stop()

    failures = [f"{attempt}:\n{outcome}" for attempt, outcome in results if "Traceback" in outcome]
    assert failures == [], "\n".join(failures)
    assert crl_failures == [], "\n".join(crl_failures)
    assert len(results) == 4 * EMPLOYERS
    # Of each pair exactly one attempt issued and the other got a Conflict.
    by_target: dict[tuple[str, int], list[str]] = {}
    for attempt, outcome in results:
        by_target.setdefault((attempt.kind, attempt.target), []).append(outcome)
    assert len(by_target) == 2 * EMPLOYERS
    assert all(sorted(o) == ["conflict", "issued"] for o in by_target.values()), by_target

    assert_nothing_lost_or_duplicated(
        app, list(zip(applicants, applications, strict=True)), first, superseded
    )
    verified = cli("audit", "verify")
    assert verified.exit_code == 0, verified.output


def assert_nothing_lost_or_duplicated(
    app: Flask,
    approved: list[tuple[EmployerAccount, int]],
    first: list[Issued],
    superseded: set[str],
) -> None:
    """The end state after a race: each application of ``approved`` (its employer, its id)
    and each certificate of ``first`` renewed has exactly one issued certificate, nothing is
    pending, serials and CRL numbers are unique, exactly the ``superseded`` serials are revoked
    and the newest CRL (published after the race) lists them."""
    with app.app_context():
        # Each application has exactly one certificate, issued.
        for account, application_id in approved:
            application = db.session.get(Application, application_id)
            assert application is not None
            assert application.status is ApplicationStatus.ISSUED
            assert application.certificate is not None
            assert application.certificate.status is CertificateStatus.ISSUED
            of_employer = db.session.scalars(
                sa.select(Certificate.id).where(Certificate.employer_id == account.employer_id)
            ).all()
            assert of_employer == [application.certificate_id]
        # Each renewed certificate has exactly one successor and one renewal application.
        for issued in first:
            successors = db.session.scalars(
                sa.select(Certificate.status).where(Certificate.renews_id == issued.certificate_id)
            ).all()
            assert successors == [CertificateStatus.ISSUED], issued.serial
            renewals = db.session.scalar(
                sa.select(sa.func.count())
                .select_from(Application)
                .where(Application.renews_id == issued.certificate_id)
            )
            assert renewals == 1, issued.serial
        # Every end-entity row is issued (nothing pending or failed left behind), and their
        # number is the first certificates + the renewals + the approvals.
        statuses = db.session.scalars(
            sa.select(Certificate.status).where(Certificate.kind == CertificateKind.END_ENTITY)
        ).all()
        assert statuses == [CertificateStatus.ISSUED] * (len(first) * 2 + len(approved))
        duplicate_serials = db.session.execute(
            sa.select(Certificate.issuer_id, Certificate.serial)
            .group_by(Certificate.issuer_id, Certificate.serial)
            .having(sa.func.count() > 1)
        ).all()
        assert duplicate_serials == []
        duplicate_crl_numbers = db.session.execute(
            sa.select(PublishedCRL.issuer_id, PublishedCRL.number)
            .group_by(PublishedCRL.issuer_id, PublishedCRL.number)
            .having(sa.func.count() > 1)
        ).all()
        assert duplicate_crl_numbers == []
        # The superseded certificates, and only they, are revoked, and the newest CRL of
        # their issuer (published after the race) lists every one of them.
        revoked = db.session.execute(
            sa.select(Certificate.serial, Certificate.revocation_reason).where(
                Certificate.revoked_at.is_not(None)
            )
        ).all()
        assert sorted(revoked) == sorted((serial, "superseded") for serial in superseded)
        old = db.session.get(Certificate, first[0].certificate_id)
        assert old is not None
        newest = db.session.scalars(
            sa.select(PublishedCRL.der)
            .where(PublishedCRL.issuer_id == old.issuer_id)
            .order_by(PublishedCRL.number.desc())
            .limit(1)
        ).one()
        listed = {f"{entry.serial_number:x}" for entry in x509.load_der_x509_crl(newest)}
        assert listed == superseded
