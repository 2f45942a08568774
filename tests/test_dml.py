"""ca_service.dml.Write: statements compiled once and run on the DBAPI cursor behave as
through SQLAlchemy's Connection.execute (types converted both ways, listeners see every
statement, errors raised as SQLAlchemy's), on both backends and inside ``pipelined``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.db import db, pipelined, utcnow
from ca_service.dml import Write
from ca_service.issuance.models import Application, ApplicationEvent, ApplicationStatus
from tests.issuance.conftest import MakeEmployer, approved_application, make_employer  # noqa: F401
from tests.statements import counted_statements, failing_statement

_applications: Any = Application.__table__
# Of an approved application only: the condition holds a value of its own (a default).
_DECIDE = (
    sa.update(_applications)
    .where(
        _applications.c.id == sa.bindparam("application_id"),
        _applications.c.status == ApplicationStatus.APPROVED,
    )
    .returning(_applications.c.status, _applications.c.updated_at)
)
_TOUCH = sa.update(_applications).where(_applications.c.id == sa.bindparam("application_id"))
_HISTORY = sa.insert(ApplicationEvent.__table__).inline()


def test_a_write_converts_its_values_both_ways_and_counts_rows(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(2)]
    when = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    with app.app_context():
        connection = db.session.connection()
        with counted_statements() as seen:
            rows = Write(_DECIDE).rows(
                connection,
                {
                    "application_id": ids[0],
                    "status": ApplicationStatus.SUBMITTED,
                    "updated_at": when,
                },
            )
            again = Write(_DECIDE).rows(
                connection,
                {
                    "application_id": ids[0],
                    "status": ApplicationStatus.SUBMITTED,
                    "updated_at": when,
                },
            )
            touched = Write(_TOUCH).rowcount(
                connection, [{"application_id": i, "updated_at": when} for i in [*ids, -1]]
            )
        # The enum and the aware datetime come back as the ORM reads them; the second UPDATE
        # finds no approved row (the statement's own value was bound).
        assert rows == [(ApplicationStatus.SUBMITTED, when)]
        assert again == []
        assert touched == 2
        assert [sql.split()[0] for sql in seen] == ["UPDATE", "UPDATE", "UPDATE"]
        db.session.commit()
        stored = db.session.get(Application, ids[0])
        assert stored is not None
        assert (stored.status, stored.updated_at) == (ApplicationStatus.SUBMITTED, when)


def test_a_write_raises_as_sqlalchemy_does(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    application_id = approved_application(app, make_employer)
    missing = {
        "application_id": 2**31 - 1,  # no such application
        "status": ApplicationStatus.ISSUED,
        "actor": "tests",
        "note": None,
        "created_at": utcnow(),
    }
    with app.app_context():
        history = Write(_HISTORY)
        with pytest.raises(sa.exc.IntegrityError):
            history.execute(db.session.connection(), missing)
        db.session.rollback()
        # Queued in PostgreSQL's pipeline mode: raised when the block is answered.
        with pytest.raises(sa.exc.IntegrityError), pipelined():
            history.execute(db.session.connection(), missing)
        db.session.rollback()
        # A listener that fails the statement (tests/faults) fails the write.
        connection = db.session.connection()  # begun (SQLite's BEGIN IMMEDIATE) before
        with failing_statement(app, 1) as failed, pytest.raises(sa.exc.OperationalError):
            Write(_TOUCH).rowcount(
                connection, {"application_id": application_id, "updated_at": utcnow()}
            )
        assert failed
        assert failed[0].startswith("UPDATE applications")
        db.session.rollback()
        with pytest.raises(TypeError, match="unknown parameter"):
            Write(_TOUCH).rowcount(db.session.connection(), {"application_id": 1, "nonsense": 2})
        db.session.rollback()


def test_queued_writes_count_after_the_pipeline_block(
    app: Flask,
    make_employer: MakeEmployer,  # noqa: F811
) -> None:
    ids = [approved_application(app, make_employer) for _ in range(2)]
    now = utcnow()
    touch = Write(_TOUCH)
    with app.app_context():
        with pipelined(3) as pipeline:
            connection = db.session.connection()
            both = touch.queue(
                connection,
                [{"application_id": i, "updated_at": now} for i in [*ids, -1]],
                queued=pipeline.queued,
            )
            none = touch.queue(
                connection, {"application_id": -1, "updated_at": now}, queued=pipeline.queued
            )
            assert pipeline.queued is (connection.dialect.name == "postgresql")
        assert (both(), none()) == (2, 0)
        db.session.rollback()
