"""Alembic environment: migrations run against the URL the caller configured."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from ca_service.db import Base, engine_options
from ca_service.model_registry import import_all_models

import_all_models()
config = context.config
target_metadata = Base.metadata


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
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
