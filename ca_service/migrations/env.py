"""Alembic environment: migrations run against the URL the caller configured."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context

from ca_service.db import Base, UTCDateTime, engine_options
from ca_service.model_registry import import_all_models

import_all_models()
config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations must not import application types: our UTC column is a timestamptz.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url must be set (ca_service.db.alembic_config does)")
    engine = sa.create_engine(url, **engine_options(url))
    # Disposed also when a migration fails, so no connection is left for the collector.
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table (copy, drop, rename); with foreign keys enforced,
                # dropping a table that other rows reference fails. SQLite switches them only
                # outside a transaction, hence on the driver's connection before the first
                # statement; the result is checked below, before the commit.
                driver = connection.connection.driver_connection
                if driver is None:
                    raise RuntimeError("the SQLite connection is closed")
                driver.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                render_item=_render_item,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
    finally:
        engine.dispose()


run_migrations()
