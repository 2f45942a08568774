"""Prepared reads (``ca_service.prepared``) run on the driver's cursor, yet must behave as the
session would: values through their types, this session's unflushed changes seen, the engine's
statement listeners told, driver errors raised as SQLAlchemy's, and instances made from rows
that are clean persistent objects of the session (the one it already holds kept)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service.auth.models import Role, User
from ca_service.db import db
from ca_service.prepared import Entity, PreparedQuery
from tests.conftest import MakeUser
from tests.statements import counted_statements, failing_statement

USERS = User.__table__
ACCOUNT = Entity(User, "user")
BY_ROLE = PreparedQuery(
    sa.select(USERS.c.role, *ACCOUNT.columns)
    .where(USERS.c.role == sa.bindparam("role"), USERS.c.username.like(sa.bindparam("prefix")))
    .order_by(USERS.c.id)
)
# An outer join that finds no account: its columns are NULL.
NOBODY = PreparedQuery(
    sa.select(sa.literal(1).label("one"), *ACCOUNT.columns)
    .select_from(sa.select(sa.literal(1).label("x")).subquery())
    .outerjoin(USERS, sa.false())
)


def _rows(prefix: str, role: Role = Role.RA_OFFICER) -> list[tuple[Any, ...]]:
    return BY_ROLE.rows(db.session(), {"role": role, "prefix": f"{prefix}%"})


def test_every_row_with_its_values_through_their_types_and_the_listeners_told(
    app: Flask, make_user: MakeUser
) -> None:
    first, _ = make_user("prep-a-1", role=Role.RA_OFFICER)
    second, _ = make_user("prep-a-2", role=Role.RA_OFFICER)
    make_user("prep-a-3", role=Role.EMPLOYER_ADMIN)
    with app.app_context():
        with counted_statements(where=lambda sql: "FROM users" in sql) as seen:
            rows = _rows("prep-a-")
        assert len(seen) == 1
        assert [row[0] for row in rows] == [Role.RA_OFFICER, Role.RA_OFFICER]  # the enum
        users = [ACCOUNT.load(db.session(), row, 1) for row in rows]
        assert [u.id for u in users if u is not None] == [first.id, second.id]
        created = users[0].created_at if users[0] is not None else None
        assert created is not None
        assert created.tzinfo is not None  # UTCDateTime's result processor ran
        db.session.rollback()


def test_the_instance_is_a_clean_persistent_object_read_without_another_query(
    app: Flask, make_user: MakeUser
) -> None:
    made, _ = make_user("prep-b-1", role=Role.RA_OFFICER)
    with app.app_context():
        (row,) = _rows("prep-b-")
        user = ACCOUNT.load(db.session(), row, 1)
        assert user is not None
        state = sa.inspect(user)
        assert state.persistent
        assert not state.modified
        assert db.session.get(User, made.id) is user
        with counted_statements() as seen:
            assert (user.username, user.email, user.role, user.disabled) == (
                made.username,
                made.email,
                Role.RA_OFFICER,
                False,
            )
        assert seen == []
        user.full_name = "Written through the session"
        db.session.commit()
        assert db.session.scalar(sa.select(USERS.c.full_name).where(USERS.c.id == made.id)) == (
            "Written through the session"
        )


def test_an_instance_already_in_the_session_is_kept_and_unflushed_changes_are_seen(
    app: Flask, make_user: MakeUser
) -> None:
    made, _ = make_user("prep-c-1", role=Role.RA_OFFICER)
    with app.app_context():
        held = db.session.get(User, made.id)
        assert held is not None
        held.role = Role.EMPLOYER_ADMIN  # not flushed: the prepared read must see it
        assert _rows("prep-c-") == []
        (row,) = _rows("prep-c-", Role.EMPLOYER_ADMIN)
        held.full_name = "Changed, not flushed yet"
        assert ACCOUNT.load(db.session(), row, 1) is held
        assert held.full_name == "Changed, not flushed yet"
        db.session.rollback()  # expires what it held
        (row,) = _rows("prep-c-")
        with counted_statements() as seen:
            again = ACCOUNT.load(db.session(), row, 1)
            assert again is held
            assert held.full_name == made.full_name  # filled in from the row
        assert seen == []
        db.session.rollback()


def test_no_instance_for_an_outer_join_that_found_none(app: Flask) -> None:
    with app.app_context():
        (row,) = NOBODY.rows(db.session(), {})
        assert row[0] == 1
        assert ACCOUNT.load(db.session(), row, 1) is None
        db.session.rollback()


def test_a_statement_failed_by_a_listener_or_the_driver_is_sqlalchemys_error(
    app: Flask, make_user: MakeUser
) -> None:
    make_user("prep-d-1", role=Role.RA_OFFICER)
    missing = PreparedQuery(sa.select(sa.table("no_such_table", sa.column("x")).c.x))
    with app.app_context():
        with failing_statement(app, 1) as failed, pytest.raises(sa.exc.OperationalError):
            _rows("prep-d-")
        assert failed
        db.session.rollback()
        with pytest.raises(sa.exc.DBAPIError) as error:
            missing.rows(db.session(), {})
        assert not error.value.connection_invalidated
        db.session.rollback()
        assert len(_rows("prep-d-")) == 1  # the session goes on
        with pytest.raises(TypeError, match="prefix"):
            BY_ROLE.rows(db.session(), {"role": Role.RA_OFFICER})
        db.session.rollback()


def test_one_row_joined_to_many_processes_the_one_once_and_the_many_of_every_row(
    app: Flask, make_user: MakeUser
) -> None:
    first, _ = make_user("prep-m-1", role=Role.RA_OFFICER)
    make_user("prep-m-2", role=Role.EMPLOYER_ADMIN)
    many = PreparedQuery(
        sa.select(*ACCOUNT.columns, USERS.c.role, USERS.c.created_at)
        .where(USERS.c.username.like(sa.bindparam("prefix")))
        .order_by(USERS.c.id)
    )
    at = len(ACCOUNT.columns)
    with app.app_context():
        session = db.session()
        found = many.one_to_many(session, {"prefix": "prep-m-%"}, at)
        assert found is not None
        one, rows = found
        user = ACCOUNT.load(session, one)
        assert user is not None
        assert user.id == first.id
        assert user.created_at.tzinfo is not None
        assert [role for role, _created in rows] == [Role.RA_OFFICER, Role.EMPLOYER_ADMIN]
        assert all(created.tzinfo is not None for _role, created in rows)
        assert many.one_to_many(session, {"prefix": "prep-none-%"}, at) is None
        db.session.rollback()
