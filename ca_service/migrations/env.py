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
    with engine.connect() as connection:
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
    engine.dispose()


run_migrations()
