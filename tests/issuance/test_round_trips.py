"""How often one-by-one issuance waits for the database, and ``pipelined`` (PostgreSQL's
pipeline mode) that sends a transaction's counted writes together."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.db import db, pipelined, utcnow
from ca_service.employers.models import Employer
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.models import Application, ApplicationEvent, ApplicationStatus, KeySource
from tests.issuance.conftest import MakeEmployer, approved_application
from tests.statements import counted_statements


def _queued(conn: sa.Connection) -> bool:
    return getattr(conn.connection.driver_connection, "_pipeline", None) is not None


def test_one_by_one_issuance_waits_for_the_database_few_times(
    app: Flask, make_employer: MakeEmployer
) -> None:
    application_id = approved_application(app, make_employer)
    waits = 0
    in_group = False
    begun = False

    def began(conn: sa.Connection) -> None:
        nonlocal begun
        begun = True

    def statement(conn: sa.Connection, *args: Any) -> None:
        nonlocal waits, in_group, begun
        queued = _queued(conn)
        if begun and not queued and conn.dialect.name == "postgresql":
            waits += 1  # psycopg's BEGIN, answered on its own unless queued with a group
        begun = False
        if not (queued and in_group):
            waits += 1  # a statement answered at once, or the first of a queued group
        in_group = queued

    def committed(conn: sa.Connection) -> None:
        nonlocal waits, in_group
        waits += 1
        in_group = False

    with app.app_context():
        application = db.session.get(Application, application_id)
        assert application is not None
        profile = service.EmployerProfile.from_settings(settings_of(app))
        token = app_token()
        db.session.commit()
        db.session.refresh(application)
        db.session.commit()
        sa.event.listen(db.engine, "commit", committed)
        sa.event.listen(db.engine, "begin", began)
        try:
            with counted_statements(each=statement):
                service.issue_certificate(
                    application=application,
                    token=token,
                    profile=profile,
                    commit=db.session.commit,
                    actor="tests",
                )
        finally:
            sa.event.remove(db.engine, "commit", committed)
            sa.event.remove(db.engine, "begin", began)
        assert application.status is ApplicationStatus.ISSUED
    # PostgreSQL: reserve (BEGIN, facts with the blocked-key check, INSERT, claim, COMMIT),
    # then store (BEGIN with the UPDATE; status, history, notices and the audit head's lock;
    # the events with the new head; COMMIT). SQLite: every statement, its BEGIN IMMEDIATEs too.
    assert waits <= (9 if db_is_postgres(app) else 15)


def db_is_postgres(app: Flask) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql")


def test_pipelined_counts_rows_after_the_block_and_raises_sqlalchemy_errors(
    app: Flask, make_employer: MakeEmployer
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(2)]
    table = Application.__table__
    touch = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("application_id"))
        .values(updated_at=sa.bindparam("now"))
    )
    now = utcnow()
    with app.app_context():
        with pipelined(2) as pipeline:
            one = pipeline.count(touch, {"application_id": ids[0], "now": now})
            both = pipeline.count(touch, [{"application_id": i, "now": now} for i in [*ids, -1]])
            none = pipeline.count(touch, {"application_id": -1, "now": now})
        assert (one(), both(), none()) == (1, 2, 0)
        db.session.rollback()
        history = sa.insert(ApplicationEvent.__table__).inline()
        with pytest.raises(sa.exc.IntegrityError), pipelined() as pipeline:
            pipeline.execute(
                history,
                {
                    "application_id": 2**31 - 1,  # no such application
                    "status": ApplicationStatus.ISSUED,
                    "actor": "tests",
                    "note": None,
                    "created_at": now,
                },
            )
        db.session.rollback()


def test_inserted_applications_are_loaded_without_reading_them_again(
    app: Flask, make_employer: MakeEmployer
) -> None:
    accounts = [make_employer() for _ in range(2)]
    with app.app_context():
        employers = [db.session.get(Employer, a.employer_id) for a in accounts]
        new = [
            Application(
                employer_id=account.employer_id,
                employer=employer,
                status=ApplicationStatus.APPROVED,
                key_source=KeySource.CSR,
                created_by_id=account.user_id,
                documents=[],
            )
            for account, employer in zip(accounts, employers, strict=True)
        ]
        statements: list[str] = []

        def statement(conn: sa.Connection, cursor: Any, sql: str, *args: Any) -> None:
            if not sql.startswith("BEGIN"):  # SQLite's own BEGIN IMMEDIATE
                statements.append(sql)

        sa.event.listen(db.engine, "before_cursor_execute", statement)
        try:
            service.insert_applications(new)
            inserted = len(statements)
            seen = [
                (a.id, a.status, a.certificate_id, a.decided_by_id, a.rejection_reason) for a in new
            ]
            assert [a.employer.id for a in new] == [e.id for e in employers if e is not None]
            assert [list(a.documents) for a in new] == [[], []]
            assert new[0].certificate is None
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", statement)
        # One multi-row INSERT on PostgreSQL (SQLite returns ids in order one row at a time),
        # nothing read back when the rows are read.
        assert inserted == len(statements) == (1 if db_is_postgres(app) else len(new))
        assert all(sql.startswith("INSERT INTO applications") for sql in statements)
        assert all(isinstance(i, int) for i, *_ in seen)
        assert seen[0][0] != seen[1][0]
        assert all(a in db.session and not db.session.is_modified(a) for a in new)
        assert new[0].created_at is not None
        assert new[0].updated_at == new[0].created_at
        db.session.commit()
        stored = db.session.scalars(
            sa.select(Application)
            .where(Application.id.in_([a.id for a in new]))
            .execution_options(populate_existing=True)
        ).all()
        assert sorted((a.id, a.employer_id, a.status) for a in stored) == sorted(
            (a.id, a.employer_id, ApplicationStatus.APPROVED) for a in new
        )
