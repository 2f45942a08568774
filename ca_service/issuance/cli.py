"""`ca-service issue`: issuing approved applications in batches; `ca-service token
provision`: counter provisioning of an employer's token."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import click
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import current_app

from ca_client.keys import build_csr, generate_token_key, subject_name, token_config
from ca_service.cli_support import app_command, fail
from ca_service.db import db
from ca_service.errors import ServiceUnavailable
from ca_service.extensions import settings_of
from ca_service.hsm_access import app_token
from ca_service.issuance import service
from ca_service.issuance.csr import check_request
from ca_service.issuance.models import Application
from hsm import KeyAlgorithm, Token, find_softhsm_module

ACTOR = "cli:counter"
ISSUE_ACTOR = "cli:issue"
ALGORITHMS = [
    a.value
    for a in (
        KeyAlgorithm.EC_P256,
        KeyAlgorithm.EC_P384,
        KeyAlgorithm.RSA_2048,
        KeyAlgorithm.RSA_3072,
    )
]


@click.command("issue")
@click.option(
    "--application",
    "application_ids",
    type=int,
    multiple=True,
    help="An approved application to issue (repeat the option for several).",
)
@click.option(
    "--all-approved",
    is_flag=True,
    help="Every approved application with a public key and no certificate yet.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 500),
    default=50,
    show_default=True,
    help="Certificates per batch: one commit reserves a batch's serials, one stores it.",
)
@app_command
def issue(application_ids: tuple[int, ...], all_approved: bool, batch_size: int) -> None:
    """Issue the certificates of approved applications, a batch at a time.

    Each batch reserves its serials and commits before the HSM signs, then stores the
    certificates with their audit events and notices and commits: what an approval does for
    one certificate, with two commits per batch. For approvals an HSM outage left behind, or
    many at once. Exits with status 1 when any application was not issued.
    """
    if bool(application_ids) == all_approved:
        raise click.UsageError("name applications with --application, or give --all-approved.")
    issued, failed = issue_and_report(_batches(application_ids, batch_size), ISSUE_ACTOR)
    click.echo(f"{issued} issued, {failed} not issued")
    if failed:
        db.session.commit()  # what was issued stays issued
        fail(f"{failed} application(s) not issued")


def issue_and_report(batches: Iterable[list[Application]], actor: str) -> tuple[int, int]:
    """Issue each batch (``issue_certificates``, its own two commits), printing a line per
    application; stops after an HSM failure. Returns (issued, not issued)."""
    token = app_token()
    profile = service.EmployerProfile.from_settings(settings_of(current_app))
    issued = failed = 0
    for batch in batches:
        hsm_failed = False
        for result in service.issue_certificates(
            applications=batch, token=token, profile=profile, commit=db.session.commit, actor=actor
        ):
            if result.certificate is not None:
                issued += 1
                click.echo(
                    f"application {result.application_id}: certificate "
                    f"{result.certificate.serial} (valid until "
                    f"{result.certificate.not_after:%Y-%m-%d})"
                )
            else:
                failed += 1
                hsm_failed = hsm_failed or isinstance(result.error, ServiceUnavailable)
                message = result.error.message if result.error else "not issued"
                click.echo(f"application {result.application_id}: {message}", err=True)
        db.session.expunge_all()  # a long run keeps one batch of objects, not all of them
        if hsm_failed:
            click.echo("the HSM failed: stopped; run the command again later", err=True)
            break
    return issued, failed


def _batches(application_ids: tuple[int, ...], size: int) -> Iterator[list[Application]]:
    """The named applications (all checked to exist first), or every one awaiting issuance."""
    if application_ids:
        wanted = list(dict.fromkeys(application_ids))
        found = {a.id: a for a in service.applications_by_id(wanted)}
        missing = [str(i) for i in wanted if i not in found]
        if missing:
            fail(f"there is no application {', '.join(missing)}")
        for start in range(0, len(wanted), size):
            yield [found[i] for i in wanted[start : start + size]]
        return
    after_id = 0
    while batch := service.awaiting_issuance(after_id=after_id, limit=size):
        after_id = batch[-1].id
        yield batch


@click.group("token")
def token_cli() -> None:
    """Employer tokens handled at the counter."""


@token_cli.command("provision")
@click.option(
    "--application",
    "application_id",
    type=int,
    required=True,
    help="An approved application whose key is generated at the counter.",
)
@click.option(
    "--module", default=None, help="The employer token's PKCS#11 module [default: SoftHSM's]."
)
@click.option("--token-label", required=True, help="Label of the employer's token.")
@click.option(
    "--pin-env",
    default="CA_EMPLOYER_TOKEN_PIN",
    show_default=True,
    help="Environment variable holding the token's user PIN.",
)
@click.option("--pin-file", default=None, help="File holding the PIN (instead of --pin-env).")
@click.option("--key-label", default="employer-key", show_default=True)
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="ec-p256", show_default=True)
@app_command
def provision(
    *,
    application_id: int,
    module: str | None,
    token_label: str,
    pin_env: str,
    pin_file: str | None,
    key_label: str,
    algorithm: str,
) -> None:
    """Generate the key on the employer's token, issue its certificate and write it there.

    Re-running after a failure picks up where it stopped: an existing key with the label is
    reused when the application has no key yet, or must match the key it has.
    """
    application = db.session.get(Application, application_id)
    if application is None:
        fail(f"there is no application {application_id}")
        return
    module_path = module or find_softhsm_module()
    if not module_path:
        fail("SoftHSM is not installed: name the token's module with --module")
        return
    employer_token = Token(
        token_config(
            module_path=module_path, token_label=token_label, pin_env=pin_env, pin_file=pin_file
        )
    )
    try:
        _provision(application, employer_token, key_label, KeyAlgorithm(algorithm))
    finally:
        employer_token.close()


def _provision(
    application: Application, employer_token: Token, key_label: str, algorithm: KeyAlgorithm
) -> None:
    if application.csr_der is None:
        if employer_token.has_key(key_label):
            click.echo(f"reusing the key {key_label!r} already on the token")
            signer = employer_token.private_key(key_label)
        else:
            signer = generate_token_key(employer_token, key_label, algorithm)
            click.echo(f"generated {algorithm.value} key {key_label!r} on the token")
        csr = build_csr(signer, subject_name(application.employer.legal_name))
        checked = check_request(csr.public_bytes(Encoding.DER))
        service.provision_request(application=application, checked=checked, actor=ACTOR)
    elif not _token_key_matches(application, employer_token, key_label):
        fail(
            f"application {application.id} already has a key from the counter, and the key "
            f"{key_label!r} on this token is not it"
        )
    settings = settings_of(current_app)
    row = service.issue_certificate(
        application=application,
        token=app_token(),
        profile=service.EmployerProfile.from_settings(settings),
        commit=db.session.commit,
        actor=ACTOR,
    )
    employer_token.store_certificate(key_label, row.der or b"", replace=True)
    click.echo(f"issued certificate {row.serial} (valid until {row.not_after:%Y-%m-%d})")
    click.echo(f"wrote it to the token next to the key {key_label!r}")


def _token_key_matches(application: Application, employer_token: Token, key_label: str) -> bool:
    if not employer_token.has_key(key_label):
        return False
    spki = employer_token.public_key(key_label).public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest() == application.public_key_sha256


@click.group("expiry")
def expiry_cli() -> None:
    """Expiry warnings to employers and CA administrators; marking certificates expired."""


@expiry_cli.command("run")
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Certificates handled per transaction.",
)
@app_command
def expiry_run(batch: int) -> None:
    """Send the warnings that are due and mark expired certificates (safe from cron every
    minute, and with several instances at once)."""
    from ca_service.db import utcnow
    from ca_service.issuance.expiry import ExpiryPolicy, run_expiry

    report = run_expiry(
        ExpiryPolicy.from_settings(settings_of(current_app)),
        now=utcnow(),
        commit=db.session.commit,
        batch_size=batch,
    )
    click.echo(report.summary())
