"""Statements compiled once per dialect and run on the DBAPI cursor of a connection.

On the hot paths (a certificate sign-in, a renewal request, the ten or so writes of an
issuance) SQLAlchemy's execution of a statement costs more CPU than the database's own work:
statement construction, cache key, execution context, parameter coercion, result set-up
(bench/login.py, bench/renewal.py, bench/issuance.py). A ``CompiledStatement`` keeps what
matters and leaves out the rest:

- the SQL is compiled once per dialect (a write's also per set of parameter keys: they choose
  the columns an INSERT or UPDATE sets), and the parameters still go through their types'
  bind processors and the columns read through their result processors, as SQLAlchemy would
  do;
- the engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners see the
  statement (what tests/statements.py counts and makes fail), unless a kind of statement says
  they need not;
- a driver error is raised as SQLAlchemy raises it (``DBAPIError.instance``, a lost connection
  invalidated), so error handlers and the session's rollback see what they know.

``ca_service.prepared`` reads with it in a session's transaction, ``ca_service.dml`` writes
with it. Only statements without late-rendered parameters (no expanding IN) belong here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPICursor, DBAPIModule

Processor = Callable[[Any], Any]
# The dialect's name, driver and parameter style, and a write's parameter keys (None: a read).
_Key = tuple[str, str, str, frozenset[str] | None]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled for one dialect (a write's for one set of parameter keys)."""

    sql: str
    # Parameter names in the order of the placeholders (positional paramstyles), else None.
    positions: tuple[str, ...] | None
    defaults: dict[str, Any]  # the values the statement carries itself (LIMIT ...), processed
    names: dict[str, str]  # a caller's parameter key -> its name in the statement
    required: frozenset[str]  # the keys a caller must give
    bind_processors: dict[str, Processor]  # by key, where the type converts
    result_processors: tuple[Processor | None, ...]  # of the columns returned, if any

    def arguments(self, parameters: dict[str, Any]) -> Any:
        """The driver's parameters for the caller's ``parameters``, processed.

        :raises TypeError: a required key is missing or a key is not the statement's.
        """
        if self.required and (missing := self.required - parameters.keys()):
            raise TypeError(f"a value is required for the parameters {sorted(missing)}")
        values = dict(self.defaults)
        processors, names = self.bind_processors, self.names
        try:
            for key, value in parameters.items():
                process = processors.get(key)
                values[names[key]] = process(value) if process is not None else value
        except KeyError as exc:
            raise TypeError(f"unknown parameter {exc} for {self.sql!r}") from None
        if self.positions is None:
            return values
        # A list, not tuple(generator): the drivers take any sequence, and this is faster.
        return [values[name] for name in self.positions]

    def rows(self, raw: Sequence[Sequence[Any]], start: int = 0) -> list[tuple[Any, ...]]:
        """The driver's rows (their columns from ``start`` on) with their values through the
        columns' result processors."""
        processors = self.result_processors
        if start:
            processors = processors[start:]
            raw = [row[start:] for row in raw]
        if not any(processors):
            return [tuple(row) for row in raw]
        return [
            tuple(
                process(value) if process is not None else value
                for process, value in zip(processors, row, strict=True)
            )
            for row in raw
        ]


def _compile(
    statement: sa.Select[Any] | sa.Insert | sa.Update,
    dialect: sa.Dialect,
    keys: frozenset[str] | None,
) -> Compiled:
    if keys is None:
        # A read: the caller gives the bind parameters that have no value of their own.
        compiled = statement.compile(dialect=dialect)
        caller = {bind.key: name for bind, name in compiled.bind_names.items() if bind.required}
        required = frozenset(caller)
    else:
        # A write: the caller's keys, which also name the columns an INSERT or UPDATE sets.
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
        caller = {bind.key: name for bind, name in compiled.bind_names.items() if bind.key in keys}
        required = frozenset()
    if compiled.literal_execute_params or compiled.post_compile_params:
        # Rendered at execution time by SQLAlchemy (expanding IN and the like).
        raise TypeError("a compiled statement cannot have parameters rendered at execution time")
    binds = {name: bind for bind, name in compiled.bind_names.items()}

    def bind_processor(name: str) -> Processor | None:
        return binds[name].type.dialect_impl(dialect).bind_processor(dialect)

    defaults = {}
    for name, value in compiled.params.items():
        if name not in caller.values():
            process = bind_processor(name)
            defaults[name] = process(value) if process is not None else value
    return Compiled(
        sql=compiled.string,
        positions=tuple(compiled.positiontup or ()) if compiled.positional else None,
        defaults=defaults,
        names=caller,
        required=required,
        bind_processors={
            key: process for key, name in caller.items() if (process := bind_processor(name))
        },
        result_processors=tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.exported_columns  # a SELECT's or RETURNING's columns
        ),
    )


class CompiledStatement:
    """A statement compiled once per dialect, run on the DBAPI cursor of a connection: what
    the reads of ``ca_service.prepared`` and the writes of ``ca_service.dml`` share."""

    # Whether the engine's cursor listeners see the statement, as SQLAlchemy's execution lets
    # them.
    tells_listeners: ClassVar[bool] = True

    def __init__(self, statement: sa.Select[Any] | sa.Insert | sa.Update) -> None:
        self._statement = statement
        # By dialect name, driver and parameter style rather than by dialect object: every
        # engine of a kind (an app's, a command's) shares one compiled form.
        self._compiled: dict[_Key, Compiled] = {}

    def _compiled_for(self, dialect: sa.Dialect, keys: frozenset[str] | None = None) -> Compiled:
        """The statement compiled for ``dialect``: a read's (``keys`` None) takes its
        required bind parameters; a write's takes exactly ``keys``."""
        key = (dialect.name, dialect.driver, dialect.paramstyle, keys)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = _compile(self._statement, dialect, keys)
        return found

    def _execute(
        self,
        connection: sa.Connection,
        compiled: Compiled,
        arguments: Any,
        *,
        many: bool = False,
    ) -> DBAPICursor:
        """Run ``compiled`` with the driver's ``arguments`` (a list of them for an
        executemany) on a new cursor of ``connection``, returned open: the caller reads it
        (``_fetch``) or its ``rowcount`` and closes it (``close_cursor``).

        :raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error.
        """
        sql = compiled.sql
        dialect = connection.dialect
        cursor = None
        try:
            cursor = connection.connection.cursor()
            listeners = self.tells_listeners and (
                connection._has_events or connection.engine._has_events
            )
            if listeners:
                # As SQLAlchemy's execution does (no execution context: None).
                for before in connection.dispatch.before_cursor_execute:
                    sql, arguments = before(connection, cursor, sql, arguments, None, many)
            if many:
                cursor.executemany(sql, arguments)
            else:
                cursor.execute(sql, arguments)
            if listeners:
                for after in connection.dispatch.after_cursor_execute:
                    after(connection, cursor, sql, arguments, None, many)
        except dialect.loaded_dbapi.Error as exc:
            error = _driver_error(connection, cursor, exc, sql, arguments)
            close_cursor(cursor, dialect)
            raise error from exc
        except BaseException:
            close_cursor(cursor, dialect)
            raise
        return cursor

    @staticmethod
    def _fetch(
        connection: sa.Connection,
        cursor: DBAPICursor,
        compiled: Compiled,
        arguments: Any,
        *,
        every_row: bool,
    ) -> Any:
        """The cursor's first row (None if none) or all its rows, as the driver gives them;
        the cursor is closed.

        :raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error.
        """
        dialect = connection.dialect
        try:
            return cursor.fetchall() if every_row else cursor.fetchone()
        except dialect.loaded_dbapi.Error as exc:
            raise _driver_error(connection, cursor, exc, compiled.sql, arguments) from exc
        finally:
            close_cursor(cursor, dialect)


def _driver_error(
    connection: sa.Connection,
    cursor: DBAPICursor | None,
    exc: DBAPIModule.Error,
    sql: str,
    arguments: Any,
) -> sa.exc.StatementError:
    # As SQLAlchemy wraps a driver's error; a lost connection is invalidated, so the pool
    # hands out a working one next.
    dialect = connection.dialect
    lost = dialect.is_disconnect(exc, connection.connection, cursor)
    if lost:
        connection.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        sql,
        arguments,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )


def close_cursor(cursor: DBAPICursor | None, dialect: sa.Dialect) -> None:
    """Close ``cursor`` (if any); the cursor of a lost connection may fail to close too, and
    what went wrong is raised already."""
    if cursor is not None:
        with contextlib.suppress(dialect.loaded_dbapi.Error):
            cursor.close()
