"""One archive holds what the service needs besides the HSM: every table as JSON lines, read in
one snapshot; the sealed documents; the secret key (TOTP enrolments are encrypted with it).

A logical dump rather than ``pg_dump`` or SQLite's backup API: the same archive restores into
either database (a move from the embedded SQLite to PostgreSQL is a backup and a restore), and
needs no server tools of a matching version on the machine. Values are stored by column type
(see ``_encode``), checked against SHA-256 sums in the manifest before anything is written.

Layout of the archive (a gzip'd tar)::

    manifest.json                 format, version, revision, counts and SHA-256 of each member
    tables/<table>.jsonl          one JSON object per row, in primary-key order
    documents/<sha256>            each stored document (named by its content hash)
    secret-key                    the service's secret key
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from alembic.util.exc import CommandError

from ca_service.db import Base, current_revision, engine_options, upgrade_database
from ca_service.errors import CAError, Conflict
from ca_service.model_registry import import_all_models
from ca_service.storage import DocumentStore

FORMAT = "ca-service-backup"
VERSION = 1
MANIFEST = "manifest.json"
SECRET_KEY_MEMBER = "secret-key"  # noqa: S105  (a member name, not a secret)
_BATCH = 1000


class BackupError(CAError):
    status_code = 400


@dataclass(frozen=True)
class BackupSummary:
    revision: str
    rows: dict[str, int]  # table -> rows
    documents: int


def _tables() -> list[sa.Table]:
    import_all_models()
    return list(Base.metadata.sorted_tables)


# -- values -----------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict | list):  # a JSON column (a history note's parameters)
        return {"$json": value}
    raise TypeError(f"no archive encoding for {type(value).__name__}")


def _decode(column: sa.Column[Any], value: Any) -> Any:
    if isinstance(value, dict):
        ((tag, text),) = value.items()
        if tag == "$datetime":
            return dt.datetime.fromisoformat(text)
        if tag == "$date":
            return dt.date.fromisoformat(text)
        if tag == "$bytes":
            return base64.b64decode(text, validate=True)
        if tag == "$json":
            return text
        raise ValueError(f"unknown tag {tag!r}")
    enum_class = getattr(column.type, "enum_class", None)
    if value is not None and enum_class is not None:
        return enum_class(value)
    return value


# -- backup -----------------------------------------------------------------------------------


@contextmanager
def _snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One connection whose reads all see the same moment of the database."""
    if engine.dialect.name == "postgresql":
        with (
            engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            ) as conn,
            conn.begin(),
        ):
            yield conn
    else:
        # SQLite in WAL mode: a read transaction reads one snapshot; BEGIN (deferred), not the
        # IMMEDIATE the service's writers use, so a backup never holds the write lock.
        from ca_service.db import read_first

        with read_first(), engine.connect() as conn, conn.begin():
            yield conn


def _add(archive: tarfile.TarFile, name: str, source: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    archive.addfile(info, source)


def _dump_table(conn: sa.Connection, table: sa.Table, sink: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    rows = 0
    names = [column.name for column in table.columns]
    result = conn.execution_options(yield_per=_BATCH).execute(
        sa.select(table).order_by(*table.primary_key.columns)
    )
    for row in result:
        line = (
            json.dumps(
                {name: _encode(value) for name, value in zip(names, row, strict=True)},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        ).encode()
        digest.update(line)
        sink.write(line)
        rows += 1
    return rows, digest.hexdigest()


def write_backup(
    *, target: Path, database_url: str, document_dir: Path, secret_key: str
) -> BackupSummary:
    """Write the archive to ``target`` (readable by its owner only), all or nothing.

    :raises BackupError: when the database has no schema or ``target`` exists.
    """
    if target.exists():
        raise BackupError(f"{target} exists; choose a new file name")
    revision = current_revision(database_url)
    if revision is None:
        raise BackupError("the database has no schema: nothing to back up")
    engine = sa.create_engine(database_url, **engine_options(database_url))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    members: dict[str, str] = {}
    rows: dict[str, int] = {}
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            with _snapshot(engine) as conn:
                for table in _tables():
                    with tempfile.TemporaryFile() as spool:
                        rows[table.name], members[f"tables/{table.name}.jsonl"] = _dump_table(
                            conn, table, spool
                        )
                        size = spool.tell()
                        spool.seek(0)
                        _add(archive, f"tables/{table.name}.jsonl", spool, size)
            documents = 0
            for path in sorted(document_dir.glob("??/*")) if document_dir.is_dir() else []:
                if path.name.startswith("."):
                    continue  # an upload still being written
                content = path.read_bytes()
                members[f"documents/{path.name}"] = hashlib.sha256(content).hexdigest()
                _add(archive, f"documents/{path.name}", io.BytesIO(content), len(content))
                documents += 1
            key = secret_key.encode()
            members[SECRET_KEY_MEMBER] = hashlib.sha256(key).hexdigest()
            _add(archive, SECRET_KEY_MEMBER, io.BytesIO(key), len(key))
            manifest = json.dumps(
                {
                    "format": FORMAT,
                    "version": VERSION,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "revision": revision,
                    "dialect": engine.dialect.name,
                    "rows": rows,
                    "members": members,
                },
                indent=2,
                sort_keys=True,
            ).encode()
            _add(archive, MANIFEST, io.BytesIO(manifest), len(manifest))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    return BackupSummary(revision=revision, rows=rows, documents=documents)


# -- restore ----------------------------------------------------------------------------------


def _open(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source, mode="r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{source} is not a readable backup archive: {exc}") from None


def _handle(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        handle = archive.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise BackupError(f"the archive lacks {name}")
    return handle


def _damaged(name: str) -> BackupError:
    return BackupError(f"the archive's {name} does not match its manifest (damaged?)")


def _member(archive: tarfile.TarFile, name: str, manifest: dict[str, Any]) -> bytes:
    """A small member, checked against the manifest."""
    content = _handle(archive, name).read()
    if hashlib.sha256(content).hexdigest() != manifest["members"].get(name):
        raise _damaged(name)
    return content


def _lines(archive: tarfile.TarFile, name: str, manifest: dict[str, Any]) -> Iterator[bytes]:
    """The lines of a table member, streamed; checked against the manifest at the end (the
    restore's transaction is still open then, so a damaged member writes nothing)."""
    digest = hashlib.sha256()
    for line in _handle(archive, name):
        digest.update(line)
        yield line
    if digest.hexdigest() != manifest["members"].get(name):
        raise _damaged(name)


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of ``source``, after checking every member against it.

    :raises BackupError: for a file that is not a backup, of another version, or damaged.
    """
    with _open(source) as archive:
        try:
            manifest = json.loads(_handle(archive, MANIFEST).read())
        except ValueError:
            raise BackupError(f"{source} has no readable manifest") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BackupError(f"{source} is not a ca-service backup")
        if manifest.get("version") != VERSION:
            raise BackupError(
                f"{source} is a backup of format version {manifest.get('version')!r}; "
                f"this version reads {VERSION}"
            )
        for name, expected in manifest["members"].items():
            digest = hashlib.sha256()
            handle = _handle(archive, name)
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            if digest.hexdigest() != expected:
                raise _damaged(name)
    return manifest


# Rows the migrations themselves write (the audit chain's genesis head, the OCSP epoch): an
# upgraded database holds them before it holds any data.
_SEEDED = frozenset({"audit_head", "ocsp_epoch"})


def _is_empty(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        present = set(sa.inspect(conn).get_table_names())
        return not any(
            conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first()
            for table in _tables()
            if table.name in present and table.name not in _SEEDED
        )


def _later_references(tables: list[sa.Table]) -> dict[str, list[str]]:
    """Per table, the foreign-key columns that point at a table restored after it (the cycle
    authorities ↔ certificates): restored empty, filled in once every row is in."""
    order = {table.name: index for index, table in enumerate(tables)}
    later: dict[str, list[str]] = {}
    for table in tables:
        for fk in table.foreign_keys:
            if order[fk.column.table.name] > order[table.name]:
                later.setdefault(table.name, []).append(fk.parent.name)
    return later


def _reset_sequences(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """PostgreSQL: the id sequences continue after the restored rows."""
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, sa.Integer):
                continue
            sequence = conn.scalar(
                sa.select(sa.func.pg_get_serial_sequence(table.name, column.name))
            )
            if sequence is not None:
                highest = conn.scalar(sa.select(sa.func.max(column))) or 0
                conn.execute(sa.select(sa.func.setval(sequence, highest + 1, False)))


def restore_backup(
    *,
    source: Path,
    database_url: str,
    document_dir: Path,
    secret_key_file: Path,
    configured_secret_key: str,
) -> BackupSummary:
    """Restore ``source`` into an empty database and document store, in one transaction.

    :raises BackupError: for a damaged or foreign archive.
    :raises Conflict: when the database already holds rows, the migrations of this version
        differ from the archive's, or another secret key is configured.
    """
    manifest = read_manifest(source)
    revision = str(manifest["revision"])
    with _open(source) as archive:
        secret_key = _member(archive, SECRET_KEY_MEMBER, manifest).decode()
    if configured_secret_key and configured_secret_key != secret_key:
        raise Conflict(
            "another secret key is configured (CA_SECRET_KEY); the restored TOTP enrolments "
            "need the backup's: unset it, or set it to the backup's key"
        )
    if secret_key_file.exists() and secret_key_file.read_text().strip() != secret_key:
        raise Conflict(f"{secret_key_file} holds another secret key; move it away first")
    engine = sa.create_engine(database_url, **engine_options(database_url))
    tables = _tables()
    rows: dict[str, int] = {}
    documents = 0
    try:
        if not _is_empty(engine):
            raise Conflict("the database already holds data; restore into an empty database")
        try:
            upgrade_database(database_url, revision)
        except CommandError as exc:
            raise Conflict(
                f"this version cannot restore a database at migration {revision}: {exc}"
            ) from None
        if current_revision(database_url) != revision:
            raise Conflict(
                f"the database is at migration {current_revision(database_url)}, the backup "
                f"at {revision}: restore with the version that made the backup"
            )
        # Documents and the key first: both are idempotent, so a failed database step can be
        # retried; the rows last, in one transaction.
        store = DocumentStore(document_dir)
        with _open(source) as archive:
            for name in manifest["members"]:
                if name.startswith("documents/"):
                    store.put(_member(archive, name, manifest))
                    documents += 1
        if not secret_key_file.exists():
            secret_key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(secret_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as sink:
                sink.write(secret_key + "\n")
        with engine.begin() as conn, _open(source) as archive:
            rows = _restore_rows(conn, archive, manifest, tables)
    finally:
        engine.dispose()
    return BackupSummary(revision=revision, rows=rows, documents=documents)


def _restore_rows(
    conn: sa.Connection, archive: tarfile.TarFile, manifest: dict[str, Any], tables: list[sa.Table]
) -> dict[str, int]:
    later = _later_references(tables)
    for table in reversed(tables):
        if table.name in _SEEDED:
            conn.execute(table.delete())  # replaced by the archive's rows
    rows: dict[str, int] = {}
    deferred: list[tuple[sa.Table, dict[str, Any], dict[str, Any]]] = []
    for table in tables:
        columns = {column.name: column for column in table.columns}
        key_names = [column.name for column in table.primary_key.columns]
        batch: list[dict[str, Any]] = []
        count = 0
        for line in _lines(archive, f"tables/{table.name}.jsonl", manifest):
            row = {name: _decode(columns[name], value) for name, value in json.loads(line).items()}
            postponed = {
                name: row[name] for name in later.get(table.name, []) if row[name] is not None
            }
            if postponed:
                deferred.append((table, {name: row[name] for name in key_names}, postponed))
                row.update(dict.fromkeys(postponed))
            batch.append(row)
            count += 1
            if len(batch) >= _BATCH:
                conn.execute(table.insert(), batch)
                batch = []
        if batch:
            conn.execute(table.insert(), batch)
        if count != manifest["rows"].get(table.name):
            raise BackupError(f"the archive's {table.name} rows do not match its manifest")
        rows[table.name] = count
    for table, key, values in deferred:
        conn.execute(
            table.update()
            .where(*(table.c[name] == value for name, value in key.items()))
            .values(values)
        )
    if conn.dialect.name == "postgresql":
        _reset_sequences(conn, tables)
    return rows
