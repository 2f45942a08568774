"""Writes compiled once per dialect and run on the DBAPI cursor of the session's connection.

Issuance runs about ten INSERTs and UPDATEs for every certificate. Through SQLAlchemy's
``Connection.execute`` each costs several times what the driver needs to run it (cache key,
execution context, parameter coercion, result set-up: bench/issuance.py, one by one). A
``Write`` is a ``ca_service.compiled.CompiledStatement`` (compiled once per dialect and set of
parameter keys, values through their types' processors both ways, the engine's cursor
listeners told, driver errors raised as SQLAlchemy raises them) with what a write adds:

- an executemany for a list of parameter sets, the rows changed, the RETURNING rows;
- inside ``db.pipelined`` (PostgreSQL's pipeline mode) the statement is queued like any other:
  its row count is read once the pipeline is answered (``Counted``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.interfaces import DBAPICursor

from ca_service.compiled import Compiled, CompiledStatement, close_cursor


class Write(CompiledStatement):
    """An INSERT or UPDATE (optionally with RETURNING), or a SELECT read with ``rows``, on
    the session's connection."""

    def __init__(self, statement: sa.Insert | sa.Update | sa.Select[Any]) -> None:
        super().__init__(statement)

    def _run(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> tuple[Compiled, Any, DBAPICursor]:
        many = not isinstance(parameters, dict)
        sets: Sequence[dict[str, Any]] = parameters if many else [parameters]  # type: ignore[list-item,assignment]
        if not sets:
            raise ValueError("no parameter sets")
        compiled = self._compiled_for(connection.dialect, frozenset(sets[0]))
        arguments: Any = [compiled.arguments(values) for values in sets]
        if not many:
            arguments = arguments[0]
        return compiled, arguments, self._execute(connection, compiled, arguments, many=many)

    def run(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> DBAPICursor:
        """Run the statement (an executemany for a list of parameter sets, which must all
        have the same keys) and return its cursor, open: its ``rowcount`` and rows are read
        by the caller, who closes it (``rowcount`` / ``rows`` do both)."""
        return self._run(connection, parameters)[2]

    def rowcount(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> int:
        """Run it and return the rows it changed (summed over an executemany)."""
        cursor = self.run(connection, parameters)
        try:
            return int(cursor.rowcount)
        finally:
            close_cursor(cursor, connection.dialect)

    def execute(
        self, connection: sa.Connection, parameters: dict[str, Any] | Sequence[dict[str, Any]]
    ) -> None:
        """Run a write whose result is not read (inside ``db.pipelined`` too: queued, its
        cursor is left to the pipeline, which answers it when the block ends)."""
        cursor = self.run(connection, parameters)
        if not _in_pipeline(connection):
            close_cursor(cursor, connection.dialect)

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
                    close_cursor(cursor, connection.dialect)

        return changed

    def rows(self, connection: sa.Connection, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a SELECT, or a statement with RETURNING, for one parameter set: its rows.

        :raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error.
        """
        compiled, arguments, cursor = self._run(connection, parameters)
        return compiled.rows(self._fetch(connection, cursor, compiled, arguments, every_row=True))


def _in_pipeline(connection: sa.Connection) -> bool:
    # psycopg's libpq connection in pipeline mode (db.pipelined); never with SQLite.
    pgconn = getattr(connection.connection.driver_connection, "pgconn", None)
    return bool(getattr(pgconn, "pipeline_status", 0))
