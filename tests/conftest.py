"""Shared fixtures: a real SoftHSM token per test session, a migrated database per backend
(SQLite always, PostgreSQL when CA_TEST_DATABASE_URL is set), the CA hierarchy initialised once
per backend, and a clean slate of everything else per test."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient

PG_ENV = "CA_TEST_DATABASE_URL"
# Limits on sending SMS codes loose enough for tests that sign the same account (or many
# employers sharing one test mobile number) in again and again; tests of the limits
# themselves (tests/auth/test_code_limits.py) set the real ones.
RELAXED_CODE_LIMITS: dict[str, Any] = {
    "SMS_CODE_INTERVAL_SECONDS": 0,
    "SMS_CODES_PER_NUMBER_HOUR": 100_000,
    "SMS_CODES_PER_ADDRESS_HOUR": 100_000,
}


# Argon2id with the service's parameters (RFC 9106: 64 MiB, 3 passes, 4 lanes) takes about a
# quarter of a second per hash or check on the CI machine, and nearly every test makes and signs
# in users: that was the largest single cost of the suite. Tests hash and check with the same
# code and algorithm (argon2id, check_needs_rehash) but these minimal parameters; tests marked
# ``production_password_hashing`` keep the service's own (the rehash upgrade, the dummy hash of
# unknown usernames). Servers started by tests (`ca-service serve`) always use the service's.
TEST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Swap the service's Argon2 hasher for TEST_PASSWORD_HASHER, unless the test is marked
    ``production_password_hashing``."""
    if request.node.get_closest_marker("production_password_hashing"):
        return
    from ca_service.auth import service

    monkeypatch.setattr(service, "_hasher", TEST_PASSWORD_HASHER)
    monkeypatch.setattr(service, "_DUMMY_HASH", _TEST_DUMMY_HASH)


_TEST_DUMMY_HASH = TEST_PASSWORD_HASHER.hash(secrets.token_urlsafe(16))


def pkcs11_loaded() -> set[str]:
    """Modules python-pkcs11 has loaded in this process."""
    import pkcs11

    return set(pkcs11._loaded)


@dataclass(frozen=True)
class HsmEnv:
    """The per-session SoftHSM set-up: one config (SoftHSM reads it once per process)."""

    var_dir: Path
    conf: Path
    ca_token_label: str
    ca_pin: str
    so_pin: str

    def new_token(self, prefix: str = "t") -> tuple[str, str]:
        """Create another token (an employer's "UKey") and return (label, user PIN)."""
        from hsm import find_softhsm_module, init_softhsm_token, rescan_tokens

        label, pin = f"{prefix}-{secrets.token_hex(4)}", secrets.token_hex(8)
        init_softhsm_token(self.conf, label, self.so_pin, pin)
        module = find_softhsm_module()
        if module and module in pkcs11_loaded():
            rescan_tokens(module)  # SoftHSM sees new tokens only after re-initialising
        return label, pin


@pytest.fixture(scope="session", autouse=True)
def compiled_catalogs() -> None:
    """The .mo files from the .po catalogs, as `make setup` compiles them (git-ignored), so a
    run straight after editing a catalog sees it. Written atomically: xdist workers race."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    from ca_service.i18n import TRANSLATIONS_DIR

    for po in TRANSLATIONS_DIR.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as source:
            catalog = read_po(source)
        scratch = mo.with_name(f".{mo.name}.{os.getpid()}")
        with scratch.open("wb") as target:
            write_mo(target, catalog)
        scratch.replace(mo)


@pytest.fixture(scope="session", autouse=True)
def hsm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HsmEnv]:
    from hsm import init_softhsm_token, write_softhsm_config

    var_dir = tmp_path_factory.mktemp("var")
    conf = write_softhsm_config(var_dir / "softhsm")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    env = HsmEnv(
        var_dir=var_dir,
        conf=conf,
        ca_token_label=f"ca-{secrets.token_hex(4)}",
        ca_pin=secrets.token_hex(8),
        so_pin=secrets.token_hex(8),
    )
    init_softhsm_token(conf, env.ca_token_label, env.so_pin, env.ca_pin)
    yield env
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("database_url") if callspec is not None else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` go first among the tests of their backend (after pytest has
    grouped the tests by backend, which it keeps: a worker migrates and initialises each
    database once). xdist hands tests out in this order, so the long ones start early on one
    worker while the other takes the many short ones, instead of finishing the run alone."""
    slow: dict[str | None, list[pytest.Item]] = {}
    for item in items:
        if item.get_closest_marker("slow"):
            slow.setdefault(_backend_of(item), []).append(item)
    if not slow:
        return
    ordered = list(slow.pop(None, []))
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        ordered += slow.pop(_backend_of(item), [])
        ordered.append(item)
    for rest in slow.values():  # a backend with only slow tests
        ordered += rest
    items[:] = ordered


def _backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if os.environ.get(PG_ENV):
        params.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    return params


@contextmanager
def _scratch_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url`` for this run only, dropped at
    the end: two test runs at once (a developer's and CI's) never see each other's rows."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"ca_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=_backends())
def database_url(request: pytest.FixtureRequest, hsm_env: HsmEnv) -> Iterator[str]:
    """A freshly migrated database of each backend (the migrated schema, not create_all)."""
    from ca_service.db import upgrade_database

    if request.param == "sqlite":
        url = f"sqlite:///{hsm_env.var_dir / 'test.db'}"
        upgrade_database(url)
        yield url
        return
    server = os.environ[PG_ENV].replace("postgresql://", "postgresql+psycopg://", 1)
    with _scratch_postgres_database(server) as url:
        upgrade_database(url)
        yield url


@pytest.fixture(scope="session")
def app_overrides(database_url: str, hsm_env: HsmEnv) -> dict[str, Any]:
    """Settings of every test app; the CLI runner uses the same."""
    os.environ["CA_TEST_HSM_PIN"] = hsm_env.ca_pin
    return {
        "VAR_DIR": str(hsm_env.var_dir),
        "DATABASE_URL": database_url,
        "TOKEN_LABEL": hsm_env.ca_token_label,
        "PIN_ENV": "CA_TEST_HSM_PIN",
        "SOFTHSM": True,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "PUBLIC_BASE_URL": "http://ca.test",
        "LOG_LEVEL": "WARNING",
        **RELAXED_CODE_LIMITS,
    }


@dataclass(frozen=True)
class Baseline:
    """Rows created once per backend (the CA hierarchy) that per-test clean-up keeps."""

    certificate_ids: frozenset[int]
    crl_ids: frozenset[int]


def _init_pki(app: Flask) -> Baseline:
    from ca_service.audit.service import ensure_audit_key
    from ca_service.authorities.service import PkiParameters, initialise_pki
    from ca_service.db import db
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.models import Certificate
    from ca_service.revocation.models import PublishedCRL
    from ca_service.revocation.service import publish_all_crls
    from hsm import KeyAlgorithm

    with app.app_context():
        settings = settings_of(app)
        initialise_pki(
            token=app_token(),
            params=PkiParameters.from_settings(settings),
            commit=db.session.commit,
            actor="tests",
        )
        ensure_audit_key(app_token(), KeyAlgorithm(settings["AUDIT_KEY_ALGORITHM"]))
        publish_all_crls(token=app_token(), settings=settings, actor="tests")
        db.session.commit()
        ids = frozenset(db.session.scalars(sa.select(Certificate.id)))
        crl_ids = frozenset(db.session.scalars(sa.select(PublishedCRL.id)))
    return Baseline(certificate_ids=ids, crl_ids=crl_ids)


@pytest.fixture(scope="session")
def pki_baseline(app_overrides: dict[str, Any]) -> Baseline:
    from ca_service.app import create_app

    app = create_app(app_overrides)
    baseline = _init_pki(app)
    _clean(app, baseline)  # every test starts with an empty audit log and no accounts
    _dispose(app)
    return baseline


def _dispose(app: Flask) -> None:
    from ca_service.db import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _clean(app: Flask, baseline: Baseline) -> None:
    """Delete everything but the CA hierarchy, children before parents."""
    from ca_service.audit.models import AuditHead
    from ca_service.audit.service import GENESIS_HASH
    from ca_service.db import Base, db
    from ca_service.models import Certificate
    from ca_service.revocation.models import PublishedCRL

    keep = {"authorities", "certificates", "alembic_version", "audit_head", "crls"}
    with app.app_context():
        # Test certificates point at test employers; unhook them before employers go.
        db.session.execute(
            sa.update(Certificate)
            .where(Certificate.id.not_in(baseline.certificate_ids))
            .values(employer_id=None)
        )
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in keep:
                db.session.execute(table.delete())
        db.session.execute(
            sa.update(AuditHead).values(seq=0, hash=GENESIS_HASH, events_since_checkpoint=0)
        )
        db.session.execute(sa.delete(PublishedCRL).where(PublishedCRL.id.not_in(baseline.crl_ids)))
        db.session.execute(
            sa.delete(Certificate).where(Certificate.id.not_in(baseline.certificate_ids))
        )
        # Revocations and expiry runs made by a test are undone: the hierarchy is shared by
        # the session.
        db.session.execute(
            sa.update(Certificate).values(
                revoked_at=None, revocation_reason=None, invalidity_date=None, expired_at=None
            )
        )
        from ca_service.issuance.expiry import DEFAULT_WARNING_DAYS, first_notice_at

        for row_id, not_after in db.session.execute(
            sa.select(Certificate.id, Certificate.not_after)
        ):
            db.session.execute(
                sa.update(Certificate)
                .where(Certificate.id == row_id)
                .values(next_notice_at=first_notice_at(not_after, DEFAULT_WARNING_DAYS))
            )
        db.session.commit()


@pytest.fixture
def app(app_overrides: dict[str, Any], pki_baseline: Baseline) -> Iterator[Flask]:
    """An app on the migrated database with the CA hierarchy; CSRF on, as in production."""
    from ca_service.app import create_app

    app = create_app(app_overrides)
    app.config["TESTING"] = True
    yield app
    _clean(app, pki_baseline)
    _dispose(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


CliInvoke = Callable[..., Result]


@pytest.fixture
def cli(app: Flask, app_overrides: dict[str, Any]) -> CliInvoke:
    """Run `ca-service ARGS...` in-process with the test app's settings."""
    from ca_service.cli import main

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(main, list(args), obj={"overrides": app_overrides}, input=input)

    return invoke


@pytest.fixture
def runner(cli: CliInvoke) -> CliInvoke:
    """Alias of ``cli`` under the name Flask's tutorial uses."""
    return cli


MakeUser = Callable[..., Any]


@pytest.fixture
def make_user(app: Flask) -> MakeUser:
    """Create a user with a permanent password of the test's choosing (no one-time step)."""
    from ca_service.auth.models import Role, User
    from ca_service.auth.service import hash_password
    from ca_service.db import db

    def make(
        username: str | None = None,
        *,
        role: Role = Role.EMPLOYER_ADMIN,
        password: str | None = None,
        email: str | None = None,
    ) -> tuple[Any, str]:
        username = username or f"user-{secrets.token_hex(3)}"
        password = password or secrets.token_urlsafe(16)
        with app.app_context():
            user = User(
                username=username,
                email=email or f"{username}@example.test",
                full_name=username.title(),
                role=role,
                password_hash=hash_password(password),
                password_is_temporary=False,
            )
            db.session.add(user)
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
        return user, password

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_env(app_overrides: dict[str, Any]) -> dict[str, str]:
    """The environment of a `ca-service` process on the test database and token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CA_")}
    env.update({f"CA_{k}": str(v) for k, v in app_overrides.items()})
    env["CA_TEST_HSM_PIN"] = os.environ["CA_TEST_HSM_PIN"]
    return env


@contextmanager
def serving(
    app_overrides: dict[str, Any],
    log: Path,
    *options: str,
    program: Sequence[str] = ("-m", "ca_service"),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`ca-service serve --workers 2 OPTIONS...` on the test database and token; its base URL
    and process, once it answers. Its output goes to ``log``. ``program``: what Python runs
    instead of ``-m ca_service`` (a wrapper that injects a fault, tests/faults)."""
    port = free_port()
    env = process_env(app_overrides)
    command = [sys.executable, *program, "serve", "--port", str(port), "--workers", "2"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*command, *options], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: two workers importing the app on a loaded 2-core machine can take a while.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/auth/login", timeout=1) as response:  # noqa: S310  (loopback URL built above)
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"server did not start: {log.read_text()}")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def served(app: Flask, app_overrides: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """`ca-service serve` with two gunicorn workers on the test database and token."""
    with serving(app_overrides, tmp_path / "server.log") as (base, _):
        yield base
