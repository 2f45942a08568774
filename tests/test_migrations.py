"""The migrated schema is the schema the models declare, on every backend: a column, index or
constraint added to a model without its migration (or the reverse) fails here."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ca_service.db import Base
from ca_service.model_registry import import_all_models


def test_migrations_match_models(database_url: str) -> None:
    import_all_models()
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": False, "compare_server_default": False}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
