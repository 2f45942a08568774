"""Database: typed declarative base, shared column types, engine set-up, migrations.

Services only ``flush()``; the request (``teardown``) or CLI command boundary commits. The few
early commits that protect an irreversible step (reserving a serial before the HSM signs) say so
where they happen.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, mapped_column, registry
from sqlalchemy.pool import Pool

from ca_service.errors import ConfigurationError, ServiceUnavailable


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC, to the second (certificates carry whole seconds)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


E = TypeVar("E", bound=enum.Enum)


def enum_column(enum_type: type[E], length: int = 32) -> sa.Enum:
    """An enum stored by value (readable in SQL, stable across renames of members)."""
    return sa.Enum(
        enum_type,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        validate_strings=True,
        length=length,
        create_constraint=True,
        name=enum_type.__name__.lower(),
    )


def rows_changed(statement: sa.Executable) -> int:
    """Run an UPDATE or DELETE in the request's session; the number of rows it changed.

    Conditional updates (``WHERE status = 'submitted'``) use it to claim a row: of two
    concurrent requests only one changes it.
    """
    result = db.session.execute(statement)
    return int(cast("sa.CursorResult[Any]", result).rowcount)


intpk = Annotated[int, mapped_column(primary_key=True)]
created_at = Annotated[dt.datetime, mapped_column(UTCDateTime(), default=utcnow)]
utc_datetime = Annotated[dt.datetime, mapped_column(UTCDateTime())]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    # Every ``Mapped[datetime]`` is a timezone-aware UTC column.
    registry = registry(
        metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={dt.datetime: UTCDateTime()},
    )


db = SQLAlchemy(model_class=Base, disable_autonaming=True)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    # WAL lets readers proceed while one writer writes; foreign keys are off by default in
    # SQLite; the busy timeout makes a second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    # FULL, not WAL's usual NORMAL: with NORMAL a commit that has returned can still be lost
    # to a power cut or an OS crash, and a CA must not lose a certificate it has handed out
    # (nor the reservation made before the HSM signs). One fsync of the WAL per commit.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()
    # pysqlite's own transaction handling starts transactions lazily as DEFERRED; a deferred
    # transaction that reads and then writes fails with SQLITE_BUSY (no waiting) when another
    # connection wrote meanwhile. We begin every transaction ourselves as IMMEDIATE instead
    # (see _sqlite_begin), which makes writers queue on the busy timeout.
    dbapi_connection.isolation_level = None


# Set while a public read path (OCSP, CRL, status page) runs: its SQLite transaction begins
# DEFERRED, a snapshot read that never waits for the write lock, so answers from storage do
# not queue behind writers (or each other). A context variable: per thread and request.
_read_first: ContextVar[bool] = ContextVar("sqlite_read_first", default=False)


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN" if _read_first.get() else "BEGIN IMMEDIATE")


@contextmanager
def read_first() -> Iterator[None]:
    """Run a read path whose transaction need not lock out writers (SQLite; a no-op for
    PostgreSQL, whose reads never block). Call ``about_to_write`` before it writes."""
    token = _read_first.set(True)
    try:
        yield
    finally:
        _read_first.reset(token)


def about_to_write() -> None:
    """Leave read-first mode: end the read snapshot so the next statement begins an IMMEDIATE
    transaction (a deferred SQLite transaction that read and then writes fails at once, without
    waiting, if another connection committed meanwhile). Only call it before anything was
    changed in this transaction: the snapshot is rolled back."""
    if _read_first.get():
        _read_first.set(False)
        db.session.rollback()


class Pipeline:
    """Statements sent to the database together (see ``pipelined``)."""

    def __init__(self, connection: sa.Connection, queued: bool) -> None:
        self._connection = connection
        self.queued = queued

    def execute(self, statement: sa.Executable, parameters: Any = None) -> None:
        """Run a write whose result is not read. An INSERT must be ``inline()``: without it
        SQLAlchemy adds RETURNING to a one-row INSERT to learn the new key, and reads that
        answer at once."""
        self._connection.execute(statement, parameters)

    def count(
        self, statement: sa.Executable, parameters: dict[str, Any] | list[dict[str, Any]]
    ) -> Callable[[], int]:
        """Run an UPDATE or DELETE; returns what tells the rows it changed (summed over a list
        of parameter sets), to call after the ``pipelined`` block."""
        if not self.queued:
            result = self._connection.execute(statement, parameters)
            changed = int(cast("sa.CursorResult[Any]", result).rowcount)
            return lambda: changed
        # Queued: SQLAlchemy reads the row count at once (not answered yet); the driver's
        # cursor has it once the pipeline is answered. One statement per parameter set, as
        # psycopg's executemany would send them anyway, each with its own count.
        cursors = [
            cast("sa.CursorResult[Any]", self._connection.execute(statement, values)).context.cursor
            for values in (parameters if isinstance(parameters, list) else [parameters])
        ]
        return lambda: sum(int(cursor.rowcount) for cursor in cursors)


# Up to this many parameter sets are queued one statement each (``Pipeline.count``); a bigger
# batch already pays its round trips once per statement (psycopg's executemany pipelines them).
PIPELINE_AT_MOST = 8


@contextmanager
def pipelined(rows: int = 1) -> Iterator[Pipeline]:
    """Send the writes run through the ``Pipeline`` to the database together, in one round
    trip with the BEGIN if the transaction starts here (PostgreSQL's pipeline mode with
    psycopg; on SQLite, whose statements cost no round trip, they simply run one by one).

    Inside, statements are queued, not answered: run only writes whose results are read after
    the block (``Pipeline.count``), never a query whose rows are read inside it, and never
    commit inside it. Leaving the block waits for every answer; a statement that failed raises
    there as SQLAlchemy's error (``IntegrityError``, ``OperationalError``…), the transaction
    left for the caller to roll back, as after any failed statement.

    ``rows`` is the most parameter sets one statement will be given: beyond
    ``PIPELINE_AT_MOST`` the statements run one by one as outside the block.
    """
    db.session.flush()  # pending ORM changes go first, answered (the flush checks row counts)
    connection = db.session.connection()
    driver: Any = connection.connection.driver_connection
    if (
        rows > PIPELINE_AT_MOST
        or connection.dialect.name != "postgresql"
        or not hasattr(driver, "pipeline")
    ):
        yield Pipeline(connection, queued=False)
        return
    import psycopg

    try:
        with driver.pipeline():
            yield Pipeline(connection, queued=True)
    except psycopg.Error as exc:
        raise cast(
            "sa.exc.DBAPIError",
            sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error, dialect=connection.dialect),
        ) from exc


def engine_options(url: str) -> dict[str, Any]:
    """Engine options per backend."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 15}}
    # No pool_pre_ping: it costs a round trip on every checkout (a quarter of a simple
    # request's database time); _ping_if_idle pings only connections that sat unused.
    # Ten connections per process: `serve`'s app threads (SERVE_THREADS) and the renewal
    # batch thread each hold one at most (tests/test_serve_defaults.py).
    return {"pool_size": 5, "max_overflow": 5}


# A pooled connection unused this long is pinged before it is handed out; one that fails is
# replaced (the server restarted, a firewall dropped it). Busier connections are not: if one
# breaks anyway, its request fails once and the pool replaces it.
PING_AFTER_IDLE_SECONDS = 10.0


@event.listens_for(Pool, "checkin")
def _checked_in(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info["checked_in_at"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        return  # a file, nothing to drop
    checked_in_at = connection_record.info.get("checked_in_at")
    if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:  # any driver's error: the connection is unusable
        raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def init_app(app: Flask, url: str) -> None:
    """Bind the database to the app and check the URL can be used."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"CA_DATABASE_URL is not a database URL: {exc}") from None
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(url)
    db.init_app(app)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn an unreachable database into a clear 503 instead of a traceback."""
    try:
        yield
    except sa.exc.OperationalError as exc:
        db.session.rollback()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise ServiceUnavailable(f"the database is unavailable: {reason}") from None


# -- migrations -------------------------------------------------------------------------------

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Any:
    """An Alembic configuration for the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``.

    :raises ServiceUnavailable: when the database cannot be reached.
    """
    from alembic import command

    try:
        command.upgrade(alembic_config(url), revision)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        raise ServiceUnavailable(f"the database is unavailable: {reason}") from None


def current_revision(url: str) -> str | None:
    """The applied migration revision, or None on an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url, **engine_options(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
