"""The `ca-service` command line. Commands that need the app build it lazily."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app

from ca_service import config as config_module
from ca_service.cli_support import (
    app_command,
    echo_table,
    fail,
    load_command_settings,
    operator_errors,
)
from ca_service.click_errors import OneLineErrors
from ca_service.db import db, upgrade_database

ACTOR = "cli"


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Employer certificate authority: set-up, service and operations."""
    ctx.ensure_object(dict)


# -- set-up ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--admin-username",
    default="admin",
    show_default=True,
    help="Username of the first CA administrator (created only if none exists).",
)
@click.option("--admin-email", default="admin@localhost", show_default=True)
def init(admin_username: str, admin_email: str) -> None:
    """Create what is missing: token, database schema, CA hierarchy, audit key, first admin.

    Idempotent: running it again changes nothing and prints the same fingerprints.
    """
    from ca_service.devsetup import ensure_local_setup

    with operator_errors():
        settings = load_command_settings()
        for line in ensure_local_setup(settings, dict(os.environ)).created:
            click.echo(f"created {line}")
        upgrade_database(settings.database_url)
    _init_pki(admin_username, admin_email)


@app_command
def _init_pki(admin_username: str, admin_email: str) -> None:
    from ca_service.audit.service import ensure_audit_key, sign_checkpoint
    from ca_service.auth.models import Role, User
    from ca_service.auth.service import create_user
    from ca_service.authorities.service import (
        PkiParameters,
        initialise_pki,
        list_authorities,
    )
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token
    from ca_service.revocation.service import crl_lifetime, has_crl, publish_crl
    from hsm import KeyAlgorithm

    settings = settings_of(current_app)
    token = app_token()
    summaries = initialise_pki(
        token=token,
        params=PkiParameters.from_settings(settings),
        commit=db.session.commit,
        actor=ACTOR,
    )
    ensure_audit_key(token, KeyAlgorithm(settings["AUDIT_KEY_ALGORITHM"]))
    for authority in list_authorities():
        if not has_crl(authority):  # the CRL URLs in our certificates must answer from the start
            publish_crl(
                token=token,
                issuer=authority,
                lifetime=crl_lifetime(settings, authority.slug),
                actor=ACTOR,
            )
            click.echo(f"published the first CRL of {authority.slug}")
    for s in summaries:
        state = "created" if s.created else "exists "
        click.echo(f"{state} {s.role:<9} {s.subject}")
        click.echo(f"          serial {s.serial}  valid until {s.not_after:%Y-%m-%d}")
        click.echo(f"          SHA-256 {s.sha256}")

    has_admin = db.session.scalar(
        sa.select(sa.func.count()).select_from(User).where(User.role == Role.CA_ADMIN)
    )
    if not has_admin:
        user, one_time_password = create_user(
            actor=ACTOR,
            username=admin_username,
            email=admin_email,
            full_name="CA administrator",
            role=Role.CA_ADMIN,
            one_time_password_hours=int(settings["ONE_TIME_PASSWORD_HOURS"]),
        )
        click.echo("")
        click.echo("First CA administrator (one-time credentials, shown once):")
        click.echo(f"  username: {user.username}")
        click.echo(f"  password: {one_time_password}")
        click.echo("  Sign in at /auth/login, then set your own password and enrol TOTP.")
    # Cover what init did (keys, CAs, first admin) by a signed checkpoint now, not 100 events
    # later.
    sign_checkpoint(token)


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    with operator_errors():
        upgrade_database(load_command_settings().database_url)
    click.echo("database schema is up to date")


@main.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("show")
@click.option("--markdown", is_flag=True, help="Print the README's configuration table.")
def config_show(markdown: bool) -> None:
    """List every setting with its default (and current value)."""
    rows = config_module.describe_settings()
    if markdown:
        click.echo("| Variable | Default | Meaning |\n| --- | --- | --- |")
        for r in rows:
            click.echo(f"| `{r['name']}` | `{r['default']}` | {r['description']} |")
        return
    with operator_errors():
        current = load_command_settings()
    for r in rows:
        name = r["name"].removeprefix(config_module.ENV_PREFIX)
        value: Any = current[name]
        shown = "(set)" if name == "SECRET_KEY" and value else value
        click.echo(f"{r['name']}={shown}")


# -- CA operations -----------------------------------------------------------------------------


@main.group("ca")
def ca_group() -> None:
    """Certificate authorities."""


@ca_group.command("list")
@app_command
def ca_list() -> None:
    """List the CAs with their SHA-256 fingerprints."""
    from ca_service.authorities.service import list_authorities

    rows = [
        {
            "slug": a.slug,
            "subject": a.certificate.subject if a.certificate else "",
            "not_after": f"{a.certificate.not_after:%Y-%m-%d}" if a.certificate else "",
            "sha256": a.certificate.fingerprint_sha256 if a.certificate else "",
        }
        for a in list_authorities()
    ]
    if not rows:
        fail("the PKI is not initialised; run `ca-service init`")
    echo_table(rows, ["slug", "subject", "not_after", "sha256"])


@main.group("ocsp")
def ocsp_group() -> None:
    """OCSP responder."""


@ocsp_group.command("rotate")
@app_command
def ocsp_rotate() -> None:
    """Issue a new OCSP responder certificate with a new HSM key."""
    from ca_service.authorities.service import (
        ISSUING_SLUG,
        PkiParameters,
        ensure_ocsp_responder,
        get_authority,
    )
    from ca_service.extensions import settings_of
    from ca_service.hsm_access import app_token

    summary = ensure_ocsp_responder(
        token=app_token(),
        issuer=get_authority(ISSUING_SLUG),
        params=PkiParameters.from_settings(settings_of(current_app)),
        commit=db.session.commit,
        actor=ACTOR,
        force=True,
    )
    click.echo(f"new OCSP responder {summary.serial}, valid until {summary.not_after:%Y-%m-%d}")


@main.command()
@click.option(
    "--older-than-minutes",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Only rows pending at least this long (a signature may be in flight).",
)
@click.option(
    "--issue",
    "issue_again",
    is_flag=True,
    help="Then issue the released applications' certificates at once (as `ca-service issue`).",
)
@app_command
def reconcile(older_than_minutes: int, issue_again: bool) -> None:
    """Burn the serials of certificates whose signing never completed (a crash or a hung HSM
    between reserving the serial and storing the signature) and release their applications
    for issuance again. Idempotent; safe while the service serves."""
    from ca_service.issuance import service
    from ca_service.issuance.reconcile import reconcile_pending
    from ca_service.issuance.service import SIGNING_GRACE

    older_than = dt.timedelta(minutes=older_than_minutes)
    if older_than < SIGNING_GRACE:
        click.echo(
            f"note: rows younger than {SIGNING_GRACE} may still be in the HSM; a signature "
            "stored after this run is discarded and its application issued again",
            err=True,
        )
    done = reconcile_pending(older_than=older_than, actor=ACTOR)
    db.session.commit()
    released: list[int] = []
    for item in done:
        line = f"marked failed: serial {item.serial} ({item.kind.value}, {item.subject})"
        if item.application_id is not None:
            released.append(item.application_id)
            line += f"; application {item.application_id} released for issuance"
        click.echo(line)
    click.echo(f"{len(done)} pending certificate(s) reconciled")
    if released and issue_again:
        from ca_service.issuance.cli import issue_and_report

        _issued, failed = issue_and_report([service.applications_by_id(released)], ACTOR)
        db.session.commit()
        if failed:
            fail("some released applications were not issued; run `ca-service issue` later")
    elif released:
        click.echo("issue them with `ca-service issue --all-approved` (or `reconcile --issue`)")


# -- serving -----------------------------------------------------------------------------------


_PEM_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
SERVE_THREADS = 8  # `serve --threads` by default


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option(
    "--worker",
    type=click.Choice(["event-loop", "threads", "sync"]),
    help="How each worker serves. event-loop (default without --tls): connections in an "
    "event loop (uvicorn), remembered OCSP answers straight from it, the app in --threads "
    "threads. threads (default and required with --tls): gunicorn's gthread. sync: one "
    "request at a time, only behind a buffering reverse proxy (nginx) that deals with slow "
    "clients.",
)
@click.option(
    "--threads",
    # 8, not 4: more renewals wait in a worker at once, so its renewal batch writes more of
    # them per commit (bench/renewal.py: 10-15 % less server CPU per renewal on PostgreSQL,
    # no clear change on SQLite). The database pool (db.engine_options) holds them and the
    # batch thread.
    default=SERVE_THREADS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Threads per worker running the app (event-loop and threads workers).",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One line per request on stdout (leave it to the reverse proxy if it logs already).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Serve HTTPS and ask each client for a certificate (optional: clients without one "
    "sign in another way). Needs --tls-cert and --tls-key.",
)
@click.option("--tls-cert", type=_PEM_FILE, help="Server certificate (PEM, followed by its chain).")
@click.option("--tls-key", type=_PEM_FILE, help="Server private key (PEM, unencrypted).")
@click.option(
    "--tls-client-ca",
    type=_PEM_FILE,
    help="CA certificates (PEM) that client certificates must chain to. Default: generated at "
    "start-up into <VAR_DIR>/tls-client-cas.pem from this agency's root and issuing CAs and "
    "every enabled tax-bureau trust anchor. After adding (or enabling) a tax anchor, restart "
    "the server so that TLS accepts its certificates. The app re-verifies every certificate "
    "itself anyway (chain, revocation, account), so disabling an anchor needs no restart.",
)
def serve(  # click passes the options by name
    *,
    host: str,
    port: int,
    workers: int,
    worker: str | None,
    threads: int,
    access_log: bool,
    tls: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
) -> None:
    """Serve the app with gunicorn (each worker opens its own PKCS#11 sessions); with --tls,
    over HTTPS, signing employers in with their TLS client certificates."""
    from ca_service.serving import TlsFiles, run_gunicorn

    tls_files: TlsFiles | None = None
    if tls:
        if tls_cert is None or tls_key is None:
            raise click.UsageError("--tls needs both --tls-cert FILE and --tls-key FILE.")
        tls_files = TlsFiles(certfile=tls_cert, keyfile=tls_key, client_ca=tls_client_ca)
    elif tls_cert or tls_key or tls_client_ca:
        raise click.UsageError("--tls-cert, --tls-key and --tls-client-ca take effect with --tls.")
    with operator_errors():
        run_gunicorn(
            host=host,
            port=port,
            workers=workers,
            threads=threads,
            worker=worker,
            tls=tls_files,
            access_log=access_log,
            announce=click.echo,
        )


def _register_feature_commands() -> None:
    from ca_service.audit.cli import audit_cli
    from ca_service.auth.cli import user_cli
    from ca_service.backup.cli import backup, restore
    from ca_service.binding.cli import trust_cli
    from ca_service.issuance.cli import expiry_cli, issue, token_cli
    from ca_service.outbox.cli import outbox_cli
    from ca_service.revocation.cli import crl_cli, ocsp_refresh, revoke

    main.add_command(user_cli, "user")
    main.add_command(audit_cli, "audit")
    main.add_command(crl_cli, "crl")
    main.add_command(revoke, "revoke")
    ocsp_group.add_command(ocsp_refresh, "refresh")
    main.add_command(outbox_cli, "outbox")
    main.add_command(trust_cli, "trust")
    main.add_command(token_cli, "token")
    main.add_command(issue, "issue")
    main.add_command(expiry_cli, "expiry")
    main.add_command(backup, "backup")
    main.add_command(restore, "restore")


_register_feature_commands()
