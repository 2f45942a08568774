"""Pooled PostgreSQL connections: pinged only after sitting idle, replaced when dead."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from ca_service import db as db_module
from ca_service.db import db


def _backend_pid(app: Flask) -> int:
    with app.app_context():
        pid = int(db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        db.session.rollback()
        db.session.remove()  # back to the pool
        return pid


def test_a_dead_idle_connection_is_replaced(
    app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite connections are files: nothing to drop")
    with app.app_context():
        db.engine.dispose()
        db.engine.pool.dispose()
    first = _backend_pid(app)
    assert _backend_pid(app) == first  # pooled, reused, no ping within the idle time

    killer = sa.create_engine(database_url)
    with killer.connect() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    killer.dispose()

    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # as after ten idle seconds
    second = _backend_pid(app)  # the ping finds it dead: a new connection, no error
    assert second != first
