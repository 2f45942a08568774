"""`ca-service trust add|list|disable|enable|crl-url|policy` and
`ca-service trust crl upload|refresh`."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click
from flask import current_app

from ca_service.binding import service, tax_crls
from ca_service.binding.models import (
    DEFAULT_REVOCATION_POLICY,
    RevocationPolicy,
    TaxCrl,
    TrustAnchor,
    TrustPurpose,
)
from ca_service.cli_support import app_command, echo_table
from ca_service.db import utcnow
from ca_service.extensions import settings_of

ACTOR = "cli"
_POLICIES = click.Choice([p.value for p in RevocationPolicy])
_POLICY_HELP = (
    "How the CA certificates of tax paths ending at this anchor are checked for revocation: "
    "'require' (each needs a current CRL from its issuer) or 'when-published' (one that names "
    "no CRL distribution point, and whose issuer has no stored CRL and no CRL URL, is "
    "accepted). The taxpayer's certificate always needs its CRL."
)


@click.group("trust")
def trust_cli() -> None:
    """Trust anchors for document seals (seal) and tax-bureau certificates (tax)."""


@trust_cli.command("add")
@click.option("--purpose", required=True, type=click.Choice([p.value for p in TrustPurpose]))
@click.option(
    "--crl-url",
    default=None,
    help="Where this CA publishes the CRL it signs (tax anchors; not the certificate's own "
    "CRL distribution point, which is where its parent publishes).",
)
@click.option(
    "--revocation-policy",
    type=_POLICIES,
    default=None,
    help=f"{_POLICY_HELP} Tax anchors only; default {DEFAULT_REVOCATION_POLICY.value}.",
)
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@app_command
def add(
    purpose: str, crl_url: str | None, revocation_policy: str | None, certificate: Path
) -> None:
    """Trust the CA certificate in FILE (PEM or DER) for PURPOSE."""
    if revocation_policy is not None and purpose != TrustPurpose.TAX.value:
        raise click.UsageError("--revocation-policy applies to tax anchors only")
    anchor = service.add_trust_anchor(
        actor=ACTOR,
        purpose=TrustPurpose(purpose),
        data=certificate.read_bytes(),
        crl_url=crl_url,
        revocation_policy=RevocationPolicy(revocation_policy or DEFAULT_REVOCATION_POLICY),
    )
    click.echo(f"trust anchor {anchor.id} ({purpose}): {anchor.subject}")
    click.echo(f"  SHA-256 {anchor.fingerprint_sha256}")
    if anchor.purpose is TrustPurpose.TAX:
        click.echo(f"  revocation policy {anchor.revocation_policy.value}")
    if anchor.crl_url:
        click.echo(f"  CRL URL {anchor.crl_url}")
    elif anchor.purpose is TrustPurpose.TAX:
        click.echo(
            "  no CRL URL: set one (`trust crl-url`) or upload its CRLs (`trust crl upload`); "
            "until then its certificates are refused"
        )


def _policy(anchor: TrustAnchor) -> str:
    return anchor.revocation_policy.value if anchor.purpose is TrustPurpose.TAX else "n/a"


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else ""


@trust_cli.command("list")
@click.option("--purpose", type=click.Choice([p.value for p in TrustPurpose]), default=None)
@app_command
def list_(purpose: str | None) -> None:
    """Trust anchors with their state and, for tax anchors, their CRL's."""
    states = [
        s
        for s in tax_crls.crl_states(now=utcnow())
        if purpose is None or s.anchor.purpose.value == purpose
    ]
    echo_table(
        [
            {
                "id": s.anchor.id,
                "purpose": s.anchor.purpose.value,
                "enabled": "yes" if s.anchor.enabled else "no",
                "not_after": f"{s.anchor.not_after:%Y-%m-%d}",
                "crl": s.status,
                "revocation": _policy(s.anchor),
                "this_update": _when(s.crl.this_update if s.crl else None),
                "next_update": _when(s.crl.next_update if s.crl else None),
                "subject": s.anchor.subject,
                "sha256": s.anchor.fingerprint_sha256[:16] + "…",
            }
            for s in states
        ],
        [
            "id",
            "purpose",
            "enabled",
            "not_after",
            "crl",
            "revocation",
            "this_update",
            "next_update",
            "subject",
            "sha256",
        ],
    )
    for s in states:
        if s.anchor.crl_url:
            click.echo(f"anchor {s.anchor.id} CRL URL: {s.anchor.crl_url}")
        if s.crl is not None and s.crl.last_error:
            click.echo(f"anchor {s.anchor.id} last CRL fetch failed: {s.crl.last_error}")


@trust_cli.command("disable")
@click.argument("anchor_id", type=int)
@app_command
def disable(anchor_id: int) -> None:
    """Stop trusting an anchor (kept for the record)."""
    anchor = service.set_anchor_enabled(actor=ACTOR, anchor_id=anchor_id, enabled=False)
    click.echo(f"disabled trust anchor {anchor.id}: {anchor.subject}")


@trust_cli.command("enable")
@click.argument("anchor_id", type=int)
@app_command
def enable(anchor_id: int) -> None:
    """Trust a disabled anchor again."""
    anchor = service.set_anchor_enabled(actor=ACTOR, anchor_id=anchor_id, enabled=True)
    click.echo(f"enabled trust anchor {anchor.id}: {anchor.subject}")


@trust_cli.command("crl-url")
@click.argument("anchor_id", type=int)
@click.argument("url", required=False)
@click.option("--clear", is_flag=True, help="Remove the CRL URL (its CRLs are then uploaded).")
@app_command
def crl_url(anchor_id: int, url: str | None, clear: bool) -> None:
    """Set URL as where anchor ANCHOR_ID's CA publishes the CRL it signs."""
    if (url is None) == (not clear):
        raise click.UsageError("give either a URL or --clear")
    anchor = service.set_crl_url(actor=ACTOR, anchor_id=anchor_id, url=None if clear else url)
    click.echo(f"trust anchor {anchor.id} CRL URL: {anchor.crl_url or '(none)'}")


@trust_cli.command("policy")
@click.argument("anchor")
@click.argument("policy", type=_POLICIES)
@app_command
def policy(anchor: str, policy: str) -> None:
    """Set the revocation policy of tax anchor ANCHOR (its number, or its SHA-256 fingerprint
    or at least 8 hex digits of its start) to POLICY: require or when-published.

    'require': each CA certificate of a path ending at the anchor needs a current CRL from its
    issuer. 'when-published': one that names no CRL distribution point, and whose issuer has no
    stored CRL and no CRL URL, is accepted. The taxpayer's certificate always needs its CRL.
    """
    found = service.find_anchor(anchor)
    previous = found.revocation_policy
    changed = service.set_revocation_policy(
        actor=ACTOR, anchor_id=found.id, policy=RevocationPolicy(policy)
    )
    if previous is changed.revocation_policy:
        click.echo(f"trust anchor {changed.id} revocation policy is already {policy}")
    else:
        click.echo(
            f"trust anchor {changed.id} revocation policy: {previous.value} -> {policy} "
            f"({changed.subject})"
        )


@trust_cli.group("crl")
def crl_cli() -> None:
    """The CRLs of tax anchors: upload one, or fetch them all (cron)."""


@crl_cli.command("upload")
@click.argument("anchor_id", type=int)
@click.argument("crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@app_command
def upload(anchor_id: int, crl_file: Path) -> None:
    """Store the CRL in CRL_FILE (PEM or DER) for anchor ANCHOR_ID, after checking it."""
    if crl_file.stat().st_size > tax_crls.MAX_CRL_BYTES:
        raise click.UsageError(f"{crl_file} is larger than {tax_crls.MAX_CRL_BYTES // 2**20} MB")
    now = utcnow()
    crl = tax_crls.upload_crl(actor=ACTOR, anchor_id=anchor_id, data=crl_file.read_bytes(), now=now)
    click.echo(_crl_line(anchor_id, crl, now))


def _crl_line(anchor_id: int, crl: TaxCrl, now: dt.datetime) -> str:
    stale = " (already out of date)" if now > crl.next_update else ""
    number = f" number {int(crl.crl_number, 16)}" if crl.crl_number else ""
    return (
        f"anchor {anchor_id}: CRL{number} thisUpdate {_when(crl.this_update)}, "
        f"nextUpdate {_when(crl.next_update)}{stale}"
    )


@app_command
def _refresh() -> int:
    # A plain function with its own app context and commit: failures noted on the anchors'
    # CRLs (last_error) are committed before the command exits non-zero.
    now = utcnow()
    results = tax_crls.refresh_all(actor=ACTOR, settings=settings_of(current_app), now=now)
    for result in results:
        if result.crl is not None:
            click.echo(f"ok      {_crl_line(result.anchor_id, result.crl, now)}")
        elif result.error is not None:
            click.echo(f"FAILED  anchor {result.anchor_id}: {result.error}")
        else:
            click.echo(
                f"skipped anchor {result.anchor_id}: no CRL URL ({result.subject}); upload "
                "its CRLs with `trust crl upload`"
            )
    if not results:
        click.echo("no enabled tax trust anchors")
    return sum(1 for r in results if r.outcome == "failed")


@crl_cli.command("refresh")
def refresh() -> None:
    """Fetch the CRL of every enabled tax anchor from its CRL URL (run it from cron).

    Exits 1 when any fetch failed; the anchors' stored CRLs stay in use until out of date.
    """
    if _refresh():
        sys.exit(1)
