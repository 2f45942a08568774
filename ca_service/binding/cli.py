"""`ca-service trust add|list|disable|enable`."""

from __future__ import annotations

from pathlib import Path

import click

from ca_service.binding import service
from ca_service.binding.models import TrustPurpose
from ca_service.cli_support import app_command, echo_table

ACTOR = "cli"


@click.group("trust")
def trust_cli() -> None:
    """Trust anchors for document seals (seal) and tax-bureau certificates (tax)."""


@trust_cli.command("add")
@click.option("--purpose", required=True, type=click.Choice([p.value for p in TrustPurpose]))
@click.option("--crl-url", default=None, help="Where the CA publishes its CRL (default: its CDP).")
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@app_command
def add(purpose: str, crl_url: str | None, certificate: Path) -> None:
    """Trust the CA certificate in FILE (PEM or DER) for PURPOSE."""
    anchor = service.add_trust_anchor(
        actor=ACTOR, purpose=TrustPurpose(purpose), data=certificate.read_bytes(), crl_url=crl_url
    )
    click.echo(f"trust anchor {anchor.id} ({purpose}): {anchor.subject}")
    click.echo(f"  SHA-256 {anchor.fingerprint_sha256}")


@trust_cli.command("list")
@click.option("--purpose", type=click.Choice([p.value for p in TrustPurpose]), default=None)
@app_command
def list_(purpose: str | None) -> None:
    """Trust anchors with their state."""
    anchors = service.list_anchors(TrustPurpose(purpose) if purpose else None)
    echo_table(
        [
            {
                "id": a.id,
                "purpose": a.purpose.value,
                "enabled": "yes" if a.enabled else "no",
                "not_after": f"{a.not_after:%Y-%m-%d}",
                "subject": a.subject,
                "sha256": a.fingerprint_sha256[:16] + "…",
            }
            for a in anchors
        ],
        ["id", "purpose", "enabled", "not_after", "subject", "sha256"],
    )


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
