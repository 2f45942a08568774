"""`ca-service crl publish`, `ca-service revoke` and `ca-service ocsp refresh`."""

from __future__ import annotations

import datetime as dt
import time

import click
from flask import current_app

from ca_service.authorities.service import ISSUING_SLUG, PkiParameters, get_authority
from ca_service.cli_support import app_command
from ca_service.db import db
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.revocation import ocsp, service
from ca_service.revocation.models import PublishedCRL

ACTOR = "cli"


@click.group("crl")
def crl_cli() -> None:
    """Certificate revocation lists."""


def _echo_crl(row: PublishedCRL) -> None:
    click.echo(
        f"CRL #{row.number} for issuer {row.issuer_id}: {row.entries} entries, "
        f"next update {row.next_update:%Y-%m-%d %H:%M} UTC"
    )


@crl_cli.command("publish")
@click.option(
    "--pending",
    is_flag=True,
    help="Only the CRLs that coalesced revocations left pending.",
)
@click.option(
    "--watch",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="Keep running: publish pending CRLs every SECONDS (a worker next to the web).",
)
@click.option("--rounds", type=click.IntRange(min=1), default=None, hidden=True)  # tests
@app_command
def publish(pending: bool, watch: int | None, rounds: int | None) -> None:
    """Sign and publish a new CRL for every CA (run from cron before nextUpdate); rotates the
    OCSP responder first when it is close to expiry."""
    token, settings = app_token(), settings_of(current_app)
    if watch is not None:
        done = 0
        while rounds is None or done < rounds:
            for row in service.publish_pending_crls(token=token, settings=settings, actor=ACTOR):
                _echo_crl(row)
            # Each round is its own transaction: a published CRL is served at once.
            db.session.commit()
            done += 1
            if rounds is None or done < rounds:
                time.sleep(watch)
        return
    if pending:
        for row in service.publish_pending_crls(token=token, settings=settings, actor=ACTOR):
            _echo_crl(row)
        return
    rotated = ocsp.rotate_responder_if_due(
        token=token,
        issuer=get_authority(ISSUING_SLUG),
        params=PkiParameters.from_settings(settings),
        commit=db.session.commit,
        actor=ACTOR,
    )
    if rotated is not None:
        click.echo(f"rotated the OCSP responder: {rotated.serial}")
        report = ocsp.refresh_ocsp_responses(
            token=token,
            settings=settings,
            margin=ocsp.response_lifetime(settings) / 2,
            commit=db.session.commit,
            actor=ACTOR,
        )
        click.echo(f"re-signed {report.signed} OCSP response(s)")
    for row in service.publish_all_crls(token=token, settings=settings, actor=ACTOR):
        _echo_crl(row)


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
    change = service.revoke_certificate(
        token=app_token(),
        settings=settings_of(current_app),
        certificate=service.find_certificate(issuer, serial),
        reason=reason,
        invalidity_date=invalidity_date.replace(tzinfo=dt.UTC) if invalidity_date else None,
        actor=ACTOR,
        publish_now=True,  # an operator at the console expects the CRL now, not coalesced
    )
    db.session.flush()
    number = change.crl.number if change.crl else "(pending)"
    click.echo(f"revoked {change.certificate.serial} ({reason}); published CRL #{number}")


@click.command("refresh")
@click.option(
    "--margin-minutes",
    type=click.IntRange(min=0),
    default=None,
    help="Re-sign responses whose nextUpdate is closer than this "
    "(default: half of CA_OCSP_RESPONSE_HOURS).",
)
@app_command
def ocsp_refresh(margin_minutes: int | None) -> None:
    """Re-sign the pre-signed OCSP responses before they lapse (cron, more often than
    CA_OCSP_RESPONSE_HOURS / 2); rotates the responder first when it is close to expiry."""
    settings = settings_of(current_app)
    margin = (
        ocsp.response_lifetime(settings) / 2
        if margin_minutes is None
        else dt.timedelta(minutes=margin_minutes)
    )
    report = ocsp.refresh_ocsp_responses(
        token=app_token(), settings=settings, margin=margin, commit=db.session.commit, actor=ACTOR
    )
    if report.rotated is not None:
        click.echo(
            f"rotated the OCSP responder: {report.rotated.serial}, "
            f"valid until {report.rotated.not_after:%Y-%m-%d}"
        )
    click.echo(f"signed {report.signed} OCSP response(s), removed {report.removed}")
