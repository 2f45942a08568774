"""Reads on a request's hot path without SQLAlchemy's per-statement machinery.

A certificate sign-in reads the certificate's status with the account it signs in; a renewal
through the API reads its token with the account, the certificate with its employer and
lineage state, and the lineage's approval with its documents. Through the ORM
(``session.execute`` of an entity statement) each of those cost more CPU than the database's
own work: statement construction, cache-key generation, the execution context, the result
and the ORM's loading (psycopg alone builds a description of every result column at every
execution). Here a statement is a ``ca_service.compiled.CompiledStatement``: compiled once per
dialect and run on the DBAPI cursor of the session's connection, in its transaction, its
parameters and columns still through their types' processors. ``OneRowQuery`` returns the
first row as a dict by column name, ``PreparedQuery`` every row as a tuple (or, for one row
joined to many, the one's columns once and the many's of every row).

``Entity`` makes a persistent ORM instance of a mapped class from the columns a statement read
of it, as the ORM's loader would: the instance the session already holds is kept (only what
it has not loaded is filled in).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.compiled import Compiled, CompiledStatement

T = TypeVar("T")


class _SessionRead(CompiledStatement):
    """A SELECT run in a session's transaction."""

    def __init__(self, query: sa.Select[Any]) -> None:
        super().__init__(query)

    def _read(
        self, session: Session, parameters: dict[str, Any], *, every_row: bool
    ) -> tuple[Compiled, Any]:
        """(the compiled statement, the cursor's first row or all its rows) of running this
        with ``parameters`` in ``session``'s transaction.

        :raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error.
        """
        if session.autoflush:
            session.flush()  # as session.execute would: the query sees this session's changes
        connection = session.connection()
        compiled = self._compiled_for(connection.dialect)
        arguments = compiled.arguments(parameters)
        cursor = self._execute(connection, compiled, arguments)
        return compiled, self._fetch(connection, cursor, compiled, arguments, every_row=every_row)


class OneRowQuery(_SessionRead):
    """A query's first row as a dict by column name, or None (the sign-in queries of
    ``auth.verification``)."""

    # As since the sign-in queries moved to the cursor: the engine's statement events do not
    # see them (the prepared reads' do).
    tells_listeners = False

    def __init__(self, query: sa.Select[Any]) -> None:
        super().__init__(query)
        self._keys = tuple(query.selected_columns.keys())

    def row(self, session: Session, parameters: dict[str, Any]) -> dict[str, Any] | None:
        """:raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error."""
        compiled, raw = self._read(session, parameters, every_row=False)
        if raw is None:
            return None
        return {
            key: process(value) if process is not None else value
            for key, process, value in zip(self._keys, compiled.result_processors, raw, strict=True)
        }


class PreparedQuery(_SessionRead):
    """A statement compiled once per dialect; ``rows`` runs it and returns every row as a tuple
    of processed values, in the order of the statement's columns. The engine's
    ``before_cursor_execute`` listeners see it (the tests count and fail statements through
    them)."""

    def rows(self, session: Session, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """:raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error."""
        compiled, raw = self._read(session, parameters, every_row=True)
        return compiled.rows(raw)

    def one_to_many(
        self, session: Session, parameters: dict[str, Any], many_at: int
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]] | None:
        """A read of one row outer-joined to many, a row each: None when it read no row, else
        the first row whole and every row's columns from ``many_at`` on, processed. The
        columns before ``many_at`` repeat in every row: processed once, not once a row.

        :raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error.
        """
        compiled, raw = self._read(session, parameters, every_row=True)
        if not raw:
            return None
        return compiled.rows(raw[:1])[0], compiled.rows(raw, many_at)


class Entity(Generic[T]):
    """Every column of a mapped class, to select (``columns``, labelled ``<prefix>_<name>``)
    and to make an instance of from a row (``load``)."""

    def __init__(self, cls: type[T], prefix: str) -> None:
        mapper = sa.inspect(cls)
        self._mapper = mapper
        self._class = mapper.class_manager
        table = mapper.local_table
        self.keys = tuple(prop.key for prop in mapper.column_attrs)
        self.columns = tuple(
            table.c[prop.columns[0].key].label(f"{prefix}_{prop.key}")
            for prop in mapper.column_attrs
        )
        self._primary = tuple(
            self.keys.index(prop.key)
            for column in mapper.primary_key
            for prop in mapper.column_attrs
            if prop.columns[0] is column
        )

    def load(self, session: Session, row: tuple[Any, ...], start: int = 0) -> T | None:
        """The persistent instance of ``row[start:start + len(columns)]`` (None when its
        primary key is NULL: an outer join found none)."""
        values = row[start : start + len(self.keys)]
        identity = tuple(values[i] for i in self._primary)
        if any(part is None for part in identity):
            return None
        key = self._mapper.identity_key_from_primary_key(identity)
        existing = session.identity_map.get(key)
        if existing is None:
            # As the ORM's loader makes an instance: no constructor (its attribute events
            # would record the values as changes), the values straight into its state; then
            # persistent with that state as loaded.
            instance: Any = self._class.new_instance()
            instance.__dict__.update(zip(self.keys, values, strict=True))
            make_transient_to_detached(instance)
            session.add(instance)
            return instance  # type: ignore[no-any-return]
        # Already in this session: like a query, keep what it holds (and any change not yet
        # flushed), fill in only what it has not loaded.
        state = existing.__dict__
        for name, value in zip(self.keys, values, strict=True):
            if name not in state:
                set_committed_value(existing, name, value)
        return existing  # type: ignore[no-any-return]
