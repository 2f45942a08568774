"""`ca-service crl publish` and `ca-service revoke`."""

from __future__ import annotations

import datetime as dt

import click
from flask import current_app

from ca_service.app import settings_of
from ca_service.authorities.service import ISSUING_SLUG, get_authority
from ca_service.cli_support import app_command
from ca_service.db import db
from ca_service.hsm_access import app_token
from ca_service.revocation import service

ACTOR = "cli"


@click.group("crl")
def crl_cli() -> None:
    """Certificate revocation lists."""


@crl_cli.command("publish")
@app_command
def publish() -> None:
    """Sign and publish a new CRL for every CA (run from cron before nextUpdate)."""
    for row in service.publish_all_crls(
        token=app_token(), settings=settings_of(current_app), actor=ACTOR
    ):
        click.echo(
            f"CRL #{row.number} for issuer {row.issuer_id}: {row.entries} entries, "
            f"next update {row.next_update:%Y-%m-%d %H:%M} UTC"
        )


@click.command("revoke")
@click.argument("serial")
@click.option("--reason", required=True, type=click.Choice(sorted(service.REASONS)))
@click.option(
    "--ca",
    "ca_slug",
    default=ISSUING_SLUG,
    show_default=True,
    help="The issuing CA of the certificate.",
)
@click.option(
    "--invalidity-date",
    type=click.DateTime(),
    default=None,
    help="When the key is known or suspected to have been compromised (UTC).",
)
@app_command
def revoke(serial: str, reason: str, ca_slug: str, invalidity_date: dt.datetime | None) -> None:
    """Revoke a certificate by serial and publish its CA's CRL at once."""
    issuer = get_authority(ca_slug)
    certificate = service.revoke_certificate(
        certificate=service.find_certificate(issuer, serial),
        reason=reason,
        invalidity_date=invalidity_date.replace(tzinfo=dt.UTC) if invalidity_date else None,
        actor=ACTOR,
    )
    settings = settings_of(current_app)
    crl = service.publish_crl(
        token=app_token(),
        issuer=issuer,
        lifetime=service.crl_lifetime(settings, issuer.slug),
        actor=ACTOR,
    )
    db.session.flush()
    click.echo(f"revoked {certificate.serial} ({reason}); published CRL #{crl.number}")
