"""`ca-service backup` and `ca-service restore`."""

from __future__ import annotations

from pathlib import Path

import click

from ca_service.audit.service import record_event
from ca_service.backup.service import BackupSummary, restore_backup, write_backup
from ca_service.cli_support import app_command, load_command_settings, operator_errors


@app_command
def _record(action: str, archive: Path, summary: BackupSummary) -> None:
    record_event(
        "cli",
        action,
        archive.name,
        {
            "revision": summary.revision,
            "rows": sum(summary.rows.values()),
            "documents": summary.documents,
        },
    )


@click.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
def backup(target: Path) -> None:
    """Write the database, the documents and the secret key to one archive (TARGET.tar.gz).

    The HSM's keys are not in it: back the token up with the HSM's own tools.
    """
    with operator_errors():
        settings = load_command_settings()
        # Read without building an app: a backup needs neither the HSM nor its PIN.
        secret_key = settings.secret_key()
        summary = write_backup(
            target=target,
            database_url=settings.database_url,
            document_dir=settings.document_dir,
            secret_key=secret_key,
        )
    _record("backup.written", target, summary)
    click.echo(
        f"backup written to {target}: {sum(summary.rows.values())} rows in "
        f"{len(summary.rows)} tables, {summary.documents} documents, migration "
        f"{summary.revision}. It holds the secret key: keep it as safe as the HSM's backup."
    )


@click.command("restore")
@click.argument("source", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def restore(source: Path) -> None:
    """Restore an archive of `ca-service backup` into an empty database and document store."""
    with operator_errors():
        settings = load_command_settings()
        summary = restore_backup(
            source=source,
            database_url=settings.database_url,
            document_dir=settings.document_dir,
            secret_key_file=settings.secret_key_file,
            configured_secret_key=str(settings["SECRET_KEY"] or ""),
        )
    _record("backup.restored", source, summary)
    click.echo(
        f"restored {sum(summary.rows.values())} rows and {summary.documents} documents "
        f"(migration {summary.revision}); the HSM token must hold the same keys"
    )
