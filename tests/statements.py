"""The SQL statements an app's engine runs, seen through SQLAlchemy's ``before_cursor_execute``
event: counted (how many round trips a path costs) or made to fail at the n-th one as when the
database goes away (tests/faults). The database, the driver and the code paths are the real
ones; only the moment of failure is chosen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask

from ca_service.db import db

# before_cursor_execute's arguments: connection, cursor, statement, parameters, context,
# executemany.
StatementHook = Callable[..., None]


# Where statements are watched: an app's engine, the current app's (None), or every engine
# (``sa.Engine``: also those a `ca-service` command run in-process builds for itself).
Target = Flask | type[sa.Engine] | None


def _engine(app: Target) -> sa.Engine | type[sa.Engine]:
    if app is None:
        return db.engine  # the current app's
    if isinstance(app, Flask):
        with app.app_context():
            return db.engine
    return app


@contextmanager
def counted_statements(
    app: Target = None,
    *,
    where: Callable[[str], bool] | None = None,
    each: StatementHook | None = None,
) -> Iterator[list[str]]:
    """The statements run meanwhile on the engine of ``app`` (see ``Target``), in order;
    ``where`` keeps only those it accepts; ``each`` is called with the event's arguments for
    every statement, before it runs (and may raise to fail it)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]
        if where is None or where(statement):
            seen.append(statement)
        if each is not None:
            each(*args)

    engine = _engine(app)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def database_gone(statement: str, params: Any = None) -> sa.exc.OperationalError:
    """The error SQLAlchemy raises when the server went away during ``statement``."""
    return sa.exc.OperationalError(statement, params, Exception("injected: server gone"))


@contextmanager
def failing_statement(app: Target, n: int) -> Iterator[list[str]]:
    """The n-th statement (1-based) run meanwhile on the app's engine fails as when the
    database went away (OperationalError); yields what it was (empty: n was never reached)."""
    failed: list[str] = []
    count = 0

    def fail_nth(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            failed.append(statement)
            raise database_gone(statement, params)

    with counted_statements(app, each=fail_nth):
        yield failed


@contextmanager
def failing_commit(app: Flask | None, nth: int | None = None) -> Iterator[list[int]]:
    """Every COMMIT meanwhile on the app's engine (or only the ``nth``, 1-based) fails in the
    driver as when the database went away before it answered (nothing is committed;
    SQLAlchemy raises OperationalError and discards the connection as it would for the real
    error); yields one entry per failure."""
    engine = _engine(app)
    assert isinstance(engine, sa.Engine), "an app's engine, not every engine"
    dialect = engine.dialect
    real = dialect.do_commit
    failed: list[int] = []
    seen = 0

    def gone(dbapi_connection: Any) -> None:
        nonlocal seen
        seen += 1
        if nth is not None and seen != nth:
            real(dbapi_connection)
            return
        failed.append(1)
        raise dialect.loaded_dbapi.OperationalError("injected: server gone at COMMIT")

    dialect.do_commit = gone  # type: ignore[method-assign]
    try:
        yield failed
    finally:
        dialect.do_commit = real  # type: ignore[method-assign]


@contextmanager
def database_down(app: Target) -> Iterator[list[str]]:
    """Every statement run meanwhile on the app's engine fails as when the database is down;
    yields the statements that were tried."""

    def gone(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        raise database_gone(statement, params)

    with counted_statements(app, each=gone) as tried:
        yield tried
