"""What the benchmarks share: a throw-away SoftHSM token and database with the CA hierarchy,
made with the project's own code (as tests/conftest.py does), and peak-RSS helpers."""

from __future__ import annotations

import atexit
import json
import os
import resource
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `.venv/bin/python bench/x.py` from a checkout

PIN_ENV = "CA_BENCH_HSM_PIN"


@dataclass(frozen=True)
class BenchEnv:
    """A SoftHSM token under ``var_dir`` and the settings overrides of an app using it."""

    var_dir: Path
    conf: Path
    overrides: dict[str, Any]

    def environ(self) -> dict[str, str]:
        """The environment of a child process (`ca-service serve`, a measured case)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CA_")}
        env.update({f"CA_{k}": str(v) for k, v in self.overrides.items()})
        env[PIN_ENV] = os.environ[PIN_ENV]
        env["SOFTHSM2_CONF"] = str(self.conf)
        return env


def make_token(var_dir: Path) -> tuple[Path, str]:
    """A fresh SoftHSM token; returns (softhsm2.conf, token label). Sets the PIN variable."""
    from hsm import init_softhsm_token, write_softhsm_config

    conf = write_softhsm_config(var_dir / "softhsm")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = f"bench-{secrets.token_hex(4)}", secrets.token_hex(8)
    os.environ.setdefault(PIN_ENV, pin)
    init_softhsm_token(conf, label, secrets.token_hex(8), os.environ[PIN_ENV])
    return conf, label


def add_token(conf: Path) -> str:
    """Another token in the process's SoftHSM configuration (same PIN); returns its label."""
    from hsm import find_softhsm_module, init_softhsm_token, rescan_tokens

    label = f"bench-{secrets.token_hex(4)}"
    init_softhsm_token(conf, label, secrets.token_hex(8), os.environ[PIN_ENV])
    module = find_softhsm_module()
    if module:
        rescan_tokens(module)
    return label


SCRATCH_PREFIX = "ca_bench"


def own_postgres(url: str) -> str:
    """A database of this run's own on the server of ``url``, dropped when the process ends:
    a benchmark never touches the database it was given (which may be someone's). A URL that
    names such a scratch database already (``scratch_postgres``) is used as it is."""
    if sa.engine.make_url(url).database.startswith(f"{SCRATCH_PREFIX}_"):  # type: ignore[union-attr]
        return url
    scratch = scratch_postgres(url)
    own = scratch.__enter__()
    atexit.register(scratch.__exit__, None, None, None)
    return own


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def prepare(var_dir: Path, conf: Path, label: str, database_url: str) -> BenchEnv:
    """Migrate the database and create the CA hierarchy and first CRLs in the token."""
    from ca_service.app import create_app
    from ca_service.authorities.service import PkiParameters, initialise_pki
    from ca_service.db import db, upgrade_database
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.revocation.service import publish_all_crls

    if database_url.startswith("postgresql"):
        database_url = own_postgres(database_url)
    upgrade_database(database_url)
    overrides: dict[str, Any] = {
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "TOKEN_LABEL": label,
        "PIN_ENV": PIN_ENV,
        "SOFTHSM": True,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "PUBLIC_BASE_URL": "http://ca.bench",
        "LOG_LEVEL": "WARNING",
    }
    app = create_app(overrides)
    with app.app_context():
        initialise_pki(
            token=app_token(),
            params=PkiParameters.from_settings(settings_of(app)),
            commit=db.session.commit,
            actor="bench",
        )
        publish_all_crls(token=app_token(), settings=settings_of(app), actor="bench")
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return BenchEnv(var_dir=var_dir, conf=conf, overrides=overrides)


def new_employer(index: int, password_hash: str) -> tuple[Any, Any]:
    """A registered, mobile-confirmed employer and its administrator (flushed)."""
    from ca_service.auth.models import Role, User
    from ca_service.db import db, utcnow
    from ca_service.employers.models import Employer

    employer = Employer(
        registration_number=f"BENCH{index:012d}",
        legal_name=f"Bench Employer {index} Co., Ltd.",
        mobile="+8613800138000",
        email=f"hr{index}@bench.test",
        mobile_confirmed_at=utcnow(),
    )
    db.session.add(employer)
    db.session.flush()
    user = User(
        username=employer.registration_number,
        email=employer.email,
        full_name="Bench",
        role=Role.EMPLOYER_ADMIN,
        password_hash=password_hash,
        password_is_temporary=False,
        employer_id=employer.id,
    )
    db.session.add(user)
    db.session.flush()
    return employer, user


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def app_context(env: BenchEnv) -> Iterator[Any]:
    """An app context on the benchmark's database and token."""
    from ca_service.app import create_app
    from ca_service.db import db

    app = create_app(env.overrides)
    with app.app_context():
        try:
            yield app
        finally:
            db.session.rollback()
            db.session.remove()
            db.engine.dispose()


def write_json(path: str | None, rows: list[dict[str, str]], **extra: Any) -> None:
    """With ``--json FILE``: the printed table's rows (and any raw figures) for bench/run_all.py."""
    if path:
        data = {"rows": rows, **extra}
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def table(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A Markdown table (pasted into the README)."""
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = [
        "| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |",
        "| " + " | ".join("-" * widths[c] for c in columns) + " |",
    ]
    lines += ["| " + " | ".join(r[c].ljust(widths[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


@contextmanager
def scratch_postgres(server_url: str, prefix: str = SCRATCH_PREFIX) -> Iterator[str]:
    """A new, empty database on the server of ``server_url`` (SQLAlchemy URL) for this run
    only, dropped at the end (as tests/conftest.py does): the benchmark never empties a
    database someone else uses."""
    admin = sa.create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group (a
    server started with ``process_group=0`` and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, …
        if int(fields[2]) == pgid and fields[0] != "Z":
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total
