"""The sign-in queries of certificate login run on the driver's cursor of the session's
connection (``ca_service.prepared.OneRowQuery``), and the account is made from their row. They must
still behave as the session would: a proper account object of the session, this session's
unflushed changes seen, the loaded account not loaded again, driver errors raised as
SQLAlchemy's."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.auth.models import Role, User
from ca_service.auth.service import complete_login
from ca_service.auth.verification import (
    CertificateRefused,
    Refusal,
    account_for,
    verify_certificate,
)
from ca_service.db import db, utcnow
from ca_service.extensions import settings_of
from ca_service.prepared import OneRowQuery
from tests.auth.certificates import (  # noqa: F401  (fixtures used by name)
    AgencyCertificate,
    IssueFor,
    agency_certificate,
)
from tests.issuance.conftest import make_employer  # noqa: F401
from tests.statements import counted_statements

USERS = User.__table__.c


def sign_in(issued: AgencyCertificate, app: Flask) -> User:
    user, _ = account_for(
        verify_certificate([issued.certificate], settings=settings_of(app), now=utcnow())
    )
    return user


def test_the_account_is_a_clean_persistent_user_of_the_session(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    with app.app_context():
        user = sign_in(issued, app)
        state = sa.inspect(user)
        assert state.persistent
        assert user in db.session
        assert not state.modified
        assert user not in db.session.dirty
        with counted_statements() as seen:
            # What the query read, and what its conditions say: no query for any of it.
            assert (user.id, user.username, user.role, user.disabled, user.employer_id) == (
                issued.account.user_id,
                issued.account.username,
                Role.EMPLOYER_ADMIN,
                False,
                issued.account.employer_id,
            )
            assert user.get_id() == f"{issued.account.user_id}:{user.session_version}"
            assert user.is_active
        assert seen == []
        # The sign-in stamp (written, never read) reaches the database.
        complete_login(user, "certificate:challenge")
        db.session.commit()
        stamped = db.session.execute(
            sa.select(USERS.last_login_at, USERS.failed_logins).where(
                USERS.id == issued.account.user_id
            )
        ).one()
        assert stamped.last_login_at is not None
        assert stamped.failed_logins == 0


def test_an_account_already_in_the_session_is_that_object(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    with app.app_context():
        loaded = db.session.get(User, issued.account.user_id)
        assert loaded is not None
        loaded.full_name = "Changed, not flushed yet"
        user = sign_in(issued, app)
        assert user is loaded
        assert user.full_name == "Changed, not flushed yet"
        db.session.commit()  # expires everything it loaded
        again = sign_in(issued, app)
        assert again is loaded
        with counted_statements() as seen:
            # Filled in from the sign-in's row, as a query would have refreshed it.
            assert (again.username, again.session_version) == (
                issued.account.username,
                loaded.session_version,
            )
        assert seen == []
        db.session.rollback()


def test_the_sign_in_sees_this_sessions_unflushed_changes(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    with app.app_context():
        user = db.session.get(User, issued.account.user_id)
        assert user is not None
        user.disabled = True  # not flushed: the sign-in query must see it all the same
        verified = verify_certificate([issued.certificate], settings=settings_of(app), now=utcnow())
        with pytest.raises(CertificateRefused) as refusal:
            account_for(verified)
        assert refusal.value.refusal is Refusal.NO_ACCOUNT
        db.session.rollback()


def test_a_lost_connection_is_sqlalchemys_error_and_is_replaced(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    with app.app_context():
        sign_in(issued, app)
        # The server went away under the session's connection.
        driver = db.session.connection().connection.dbapi_connection
        assert driver is not None
        driver.close()
        with pytest.raises(sa.exc.DBAPIError) as error:
            sign_in(issued, app)
        assert error.value.connection_invalidated
        db.session.rollback()
        # The next sign-in gets a working connection.
        assert sign_in(issued, app).username == issued.account.username
        db.session.rollback()


def test_a_failing_statement_is_sqlalchemys_error(app: Flask) -> None:
    missing = sa.table("no_such_table", sa.column("x"))
    query = OneRowQuery(sa.select(missing.c.x).where(missing.c.x == sa.bindparam("x")).limit(1))
    with app.app_context():
        with pytest.raises(sa.exc.DBAPIError) as error:
            query.row(db.session(), {"x": 1})
        assert not error.value.connection_invalidated
        assert "no_such_table" in str(error.value)
        db.session.rollback()
        with pytest.raises(TypeError, match="a value is required"):
            query.row(db.session(), {})
        db.session.rollback()


def test_parameters_and_columns_go_through_their_types(
    app: Flask,
    agency_certificate: IssueFor,  # noqa: F811
) -> None:
    issued = agency_certificate()
    query = OneRowQuery(
        sa.select(USERS.id, USERS.role, USERS.created_at)
        .where(USERS.role == sa.bindparam("role"), USERS.id == sa.bindparam("id"))
        .limit(1)
    )
    with app.app_context():
        row = query.row(db.session(), {"role": Role.EMPLOYER_ADMIN, "id": issued.account.user_id})
        assert row is not None
        assert row["id"] == issued.account.user_id
        assert row["role"] is Role.EMPLOYER_ADMIN  # the enum, not the stored text
        created = db.session.get(User, issued.account.user_id)
        assert created is not None
        assert row["created_at"] == created.created_at  # timezone-aware UTC, on both databases
        assert row["created_at"].utcoffset().total_seconds() == 0
        assert query.row(db.session(), {"role": Role.AUDITOR, "id": issued.account.user_id}) is None
        db.session.rollback()
