"""Writes compiled once per dialect and run on the DBAPI cursor of the session's connection.

Issuance runs about ten INSERTs and UPDATEs for every certificate. Through SQLAlchemy's
``Connection.execute`` each costs several times what the driver needs to run it (cache key,
execution context, parameter coercion, result set-up: bench/issuance.py, one by one). A
``Write`` keeps what matters and leaves out the rest:

- the SQL is compiled once per dialect and set of parameter keys, the parameters still go
  through their types' bind processors, and RETURNING columns through their result
  processors, as SQLAlchemy would do;
- the engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners see every
  statement (what tests/statements.py counts and makes fail);
- a driver error is raised as SQLAlchemy raises it (``DBAPIError.instance``, a lost connection
  invalidated), so error handlers and the session's rollback see what they know;
- inside ``db.pipelined`` (PostgreSQL's pipeline mode) the statement is queued like any other:
  its row count is read once the pipeline is answered (``Counted``).

Only statements without late-rendered parameters (no expanding IN) belong here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPICursor

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # positional drivers (SQLite): the order of the names
    defaults: dict[str, Any]  # values the statement holds itself, processed
    names: dict[str, str]  # caller's key -> compiled bind name
    processors: dict[str, Processor]  # by caller's key, where the type converts
    result_processors: tuple[Processor | None, ...]


class Write:
    """An INSERT or UPDATE (optionally with RETURNING), or a SELECT read with ``rows``, on
    the session's connection."""

    def __init__(self, statement: sa.Insert | sa.Update | sa.Select[Any]) -> None:
        self._statement = statement
        # By the dialect's name, driver and parameter style, and the caller's parameter keys.
        self._compiled: dict[tuple[str, str, str, frozenset[str]], _Compiled] = {}

    def _compile(self, dialect: sa.Dialect, keys: frozenset[str]) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect, column_keys=sorted(keys))
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise TypeError("a Write cannot have parameters rendered at execution time")
        binds = {name: bind for bind, name in compiled.bind_names.items()}

        def processor(name: str) -> Processor | None:
            return binds[name].type.dialect_impl(dialect).bind_processor(dialect)

        names = {bind.key: name for bind, name in compiled.bind_names.items() if bind.key in keys}
        defaults = {}
        for name, value in compiled.params.items():
            if name not in names.values():
                process = processor(name)
                defaults[name] = process(value) if process is not None else value
        returning = self._statement.exported_columns  # the columns returned, if any
        prepared = _Compiled(
            sql=compiled.string,
            positions=tuple(compiled.positiontup or ()) if compiled.positional else None,
            defaults=defaults,
            names=names,
            processors={
                key: process for key, name in names.items() if (process := processor(name))
            },
            result_processors=tuple(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in returning
            ),
        )
        self._compiled[_key(dialect, keys)] = prepared
        return prepared

    def _arguments(self, compiled: _Compiled, parameters: dict[str, Any]) -> Any:
        values = dict(compiled.defaults)
        for key, value in parameters.items():
            process = compiled.processors.get(key)
            values[compiled.names[key]] = process(value) if process is not None else value
        if compiled.positions is None:
            return values
        return tuple(values[name] for name in compiled.positions)

    def run(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> DBAPICursor:
        """Run the statement (an executemany for a list of parameter sets, which must all
        have the same keys) and return its cursor, open: its ``rowcount`` and rows are read
        by the caller, who closes it (``rowcount`` / ``rows`` do both)."""
        many = not isinstance(parameters, dict)
        sets: Sequence[dict[str, Any]] = parameters if many else [parameters]  # type: ignore[list-item,assignment]
        if not sets:
            raise ValueError("no parameter sets")
        keys = frozenset(sets[0])
        dialect = connection.dialect
        compiled = self._compiled.get(_key(dialect, keys)) or self._compile(dialect, keys)
        try:
            arguments: Any = [self._arguments(compiled, values) for values in sets]
        except KeyError as exc:
            raise TypeError(f"unknown parameter {exc} for {compiled.sql!r}") from None
        if not many:
            arguments = arguments[0]
        sql = compiled.sql
        dbapi_connection = connection.connection
        cursor = dbapi_connection.cursor()
        try:
            for before in connection.dispatch.before_cursor_execute:
                sql, arguments = before(connection, cursor, sql, arguments, None, many)
            if many:
                cursor.executemany(sql, arguments)
            else:
                cursor.execute(sql, arguments)
            for after in connection.dispatch.after_cursor_execute:
                after(connection, cursor, sql, arguments, None, many)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            _close(cursor, dialect)
            if lost:
                connection.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                sql,
                arguments,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc
        except BaseException:
            _close(cursor, dialect)
            raise
        return cursor

    def rowcount(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> int:
        """Run it and return the rows it changed (summed over an executemany)."""
        cursor = self.run(connection, parameters)
        try:
            return int(cursor.rowcount)
        finally:
            _close(cursor, connection.dialect)

    def execute(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> None:
        """Run a write whose result is not read (inside ``db.pipelined`` too: queued, its
        cursor is left to the pipeline, which answers it when the block ends)."""
        cursor = self.run(connection, parameters)
        if not _in_pipeline(connection):
            _close(cursor, connection.dialect)

    def queue(
        self,
        connection: sa.Connection,
        parameters: dict[str, Any] | list[dict[str, Any]],
        *,
        queued: bool,
    ) -> Callable[[], int]:
        """Run it inside ``db.pipelined`` (``queued``: ``Pipeline.queued``); returns what
        tells the rows it changed, summed over the parameter sets, to call after the block
        (which also closes the cursors). Queued, one statement per parameter set, each with
        its own count (as ``Pipeline.count``)."""
        sets = [parameters] if isinstance(parameters, dict) else parameters
        cursors = [self.run(connection, values) for values in sets] if queued else []
        if not queued:
            cursors.append(self.run(connection, parameters))

        def changed() -> int:
            try:
                return sum(int(cursor.rowcount) for cursor in cursors)
            finally:
                for cursor in cursors:
                    _close(cursor, connection.dialect)

        return changed

    def rows(self, connection: sa.Connection, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a SELECT, or a statement with RETURNING, for one parameter set: its rows."""
        dialect = connection.dialect
        cursor = self.run(connection, parameters)
        try:
            raw = cursor.fetchall()
        except dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect
            ) from exc
        finally:
            _close(cursor, dialect)
        compiled = self._compiled[_key(dialect, frozenset(parameters))]
        return [
            tuple(
                process(value) if process is not None else value
                for process, value in zip(compiled.result_processors, row, strict=True)
            )
            for row in raw
        ]


def _key(dialect: sa.Dialect, keys: frozenset[str]) -> tuple[str, str, str, frozenset[str]]:
    return (dialect.name, dialect.driver, dialect.paramstyle, keys)


def _in_pipeline(connection: sa.Connection) -> bool:
    # psycopg's libpq connection in pipeline mode (db.pipelined); never with SQLite.
    pgconn = getattr(connection.connection.driver_connection, "pgconn", None)
    return bool(getattr(pgconn, "pipeline_status", 0))


def _close(cursor: DBAPICursor, dialect: sa.Dialect) -> None:
    # The cursor of a lost connection may fail to close too: what went wrong is raised already.
    with contextlib.suppress(dialect.loaded_dbapi.Error):
        cursor.close()
