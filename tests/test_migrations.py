"""The migrated schema is the schema the models declare, on every backend: a column, index or
constraint added to a model without its migration (or the reverse) fails here."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ca_service.db import Base, alembic_config, upgrade_database
from ca_service.model_registry import import_all_models
from tests.conftest import _scratch_postgres_database


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


_ADMIN_ROW = (
    "INSERT INTO users (username, email, full_name, role, password_hash, password_is_temporary,"
    " failed_logins, disabled, session_version, created_at, employer_id) VALUES"
    " (:username, 'a@example.test', 'n', :role, 'h', false, 0, false, 1, :now, :employer)"
)


def _scratch_url(database_url: str, tmp_path: Path) -> AbstractContextManager[str]:
    if database_url.startswith("sqlite"):
        return nullcontext(f"sqlite:///{tmp_path / 'migrations.db'}")
    return _scratch_postgres_database(database_url.rsplit("/", 1)[0] + "/postgres")


def test_operator_migration_goes_up_and_down_with_rows(database_url: str, tmp_path: Path) -> None:
    """0010 rebuilds ``users`` on SQLite: referencing rows (an API token) survive both ways, the
    new role is accepted after it, and the downgrade refuses while operators exist."""
    with _scratch_url(database_url, tmp_path) as url:
        upgrade_database(url, "0009_anchor_revocation_policy")
        engine = sa.create_engine(url)
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        try:
            with engine.begin() as conn:
                employer = conn.execute(
                    sa.text(
                        "INSERT INTO employers (registration_number, legal_name, mobile, email,"
                        " language, created_at, updated_at) VALUES ('N1', 'L', '+1234567',"
                        " 'a@example.test', 'en', :now, :now) RETURNING id"
                    ),
                    {"now": now},
                ).scalar_one()
                admin = conn.execute(
                    sa.text(_ADMIN_ROW + " RETURNING id"),
                    {"username": "N1", "role": "employer_admin", "now": now, "employer": employer},
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO api_tokens (user_id, token_hash, expires_at, created_at)"
                        " VALUES (:user, 't', :now, :now)"
                    ),
                    {"user": admin, "now": now},
                )
            upgrade_database(url)
            with engine.begin() as conn:
                conn.execute(
                    sa.text(_ADMIN_ROW),
                    {
                        "username": "N1-1",
                        "role": "employer_operator",
                        "now": now,
                        "employer": employer,
                    },
                )
            with pytest.raises(RuntimeError, match="HR operator"):
                command.downgrade(alembic_config(url), "0009_anchor_revocation_policy")
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM users WHERE username = 'N1-1'"))
            command.downgrade(alembic_config(url), "0009_anchor_revocation_policy")
            with engine.begin() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM api_tokens")).scalar() == 1
                with pytest.raises(sa.exc.IntegrityError):
                    conn.execute(
                        sa.text(_ADMIN_ROW),
                        {
                            "username": "X",
                            "role": "employer_operator",
                            "now": now,
                            "employer": None,
                        },
                    )
        finally:
            engine.dispose()


def test_history_note_codes_go_up_and_down_keeping_every_note(
    database_url: str, tmp_path: Path
) -> None:
    """0012 adds the note's code and parameters and rewrites nothing; the downgrade writes
    the English sentence of coded rows into ``note`` (before what an officer typed)."""
    with _scratch_url(database_url, tmp_path) as url:
        upgrade_database(url, "0011_document_verdict_reason")
        engine = sa.create_engine(url)
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        event = (
            "INSERT INTO application_events (application_id, status, actor, note, created_at)"
            " VALUES (:application, 'submitted', 'n', :note, :now)"
        )
        try:
            with engine.begin() as conn:
                employer = conn.execute(
                    sa.text(
                        "INSERT INTO employers (registration_number, legal_name, mobile, email,"
                        " language, created_at, updated_at) VALUES ('N1', 'L', '+1234567',"
                        " 'a@example.test', 'en', :now, :now) RETURNING id"
                    ),
                    {"now": now},
                ).scalar_one()
                admin = conn.execute(
                    sa.text(_ADMIN_ROW + " RETURNING id"),
                    {"username": "N1", "role": "employer_admin", "now": now, "employer": employer},
                ).scalar_one()
                application = conn.execute(
                    sa.text(
                        "INSERT INTO applications (employer_id, status, key_source,"
                        " created_by_id, created_at, updated_at) VALUES (:employer, 'submitted',"
                        " 'csr', :admin, :now, :now) RETURNING id"
                    ),
                    {"employer": employer, "admin": admin, "now": now},
                ).scalar_one()
                conn.execute(
                    sa.text(event), {"application": application, "note": "Old.", "now": now}
                )
            upgrade_database(url)
            coded = sa.text(
                "INSERT INTO application_events (application_id, status, actor, note_code,"
                " note_params, note, created_at) VALUES (:application, 'rejected', 'n', :code,"
                " :params, :note, :now)"
            ).bindparams(sa.bindparam("params", type_=sa.JSON(none_as_null=True)))
            with engine.begin() as conn:
                assert conn.execute(
                    sa.text("SELECT note, note_code, note_params FROM application_events")
                ).all() == [("Old.", None, None)]
                for code, params, note in [
                    ("rejected", None, "Not signed."),
                    ("issued", {"serial": "0a1b"}, None),
                    ("renewal_needs_review", {"reasons": [{"code": "no_approval"}]}, None),
                ]:
                    conn.execute(
                        coded,
                        {
                            "application": application,
                            "code": code,
                            "params": params,
                            "note": note,
                            "now": now,
                        },
                    )
            command.downgrade(alembic_config(url), "0011_document_verdict_reason")
            with engine.begin() as conn:
                notes = conn.execute(
                    sa.text("SELECT note FROM application_events ORDER BY id")
                ).scalars()
                assert list(notes) == [
                    "Old.",
                    "Rejected: Not signed.",
                    "Certificate issued (serial 0a1b).",
                    "Needs review: no officer approval was found for this certificate.",
                ]
            upgrade_database(url)
        finally:
            engine.dispose()
