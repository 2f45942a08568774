"""Reads on a request's hot path without SQLAlchemy's per-statement machinery.

A renewal through the API reads its token with the account, the certificate with its
employer and lineage state, and the lineage's approval with its documents. Through the ORM
(``session.execute`` of an entity statement) each of those cost more CPU than the database's
own work: statement construction, cache-key generation, the execution context, the result
and the ORM's loading. Here a statement is compiled once per dialect (``auth.verification``'s
one-row sign-in query, whose compile step this reuses) and run on the DBAPI cursor of the
session's connection, in its transaction; its parameters and columns still go through their
types' processors. Unlike the sign-in query, the engine's ``before_cursor_execute`` listeners
see each statement (the tests count and fail statements through them), and every row is
returned.

``Entity`` makes a persistent ORM instance of a mapped class from the columns a statement read
of it, as the ORM's loader would: the instance the session already holds is kept (only what
it has not loaded is filled in).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from ca_service.auth.verification import _OneRowQuery

T = TypeVar("T")


class PreparedQuery(_OneRowQuery):
    """A statement compiled once per dialect; ``rows`` runs it and returns every row as a tuple
    of processed values, in the order of the statement's columns."""

    def rows(self, session: Session, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """:raises sqlalchemy.exc.DBAPIError: as SQLAlchemy raises a driver's error."""
        compiled, raw = self._run(session, parameters, every_row=True, listeners=True)
        processors = compiled.result_processors
        if not any(processors):
            return [tuple(row) for row in raw]
        return [
            tuple(
                process(value) if process is not None else value
                for process, value in zip(processors, row, strict=True)
            )
            for row in raw
        ]


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
