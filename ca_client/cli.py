"""The `ca-client` command line: employer keys on a token or in a file, CSRs, certificates.

Secrets never come from arguments (other local users can read a process's command line): the
token PIN and the key-file passphrase come from an environment variable or a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client import keys, remote, renewal
from ca_client.certificates import (
    import_certificate,
    load_certificate_chain,
    load_certificate_file,
)
from ca_client.errors import EXIT_NOT_DUE, EXIT_PENDING, ClientError, RenewalRefused
from ca_service.click_errors import OneLineErrors
from hsm import (
    HSMError,
    KeyAlgorithm,
    KeyNotFound,
    PKCS11ModuleNotFound,
    Token,
    TokenNotFound,
    find_softhsm_module,
)

F = TypeVar("F", bound=Callable[..., Any])

_SUBJECT_NOTE = (
    "Only for your own records: the CA ignores the CSR subject and puts the organisation "
    "details it holds on file into the certificate."
)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Employer client of the certificate authority.

    Create your organisation's key pair on your PKCS#11 token (UKey) or in an encrypted key
    file, write the certificate signing request (CSR) to hand to the CA, and store the
    certificate the CA issues on the token beside its key. Before it expires, `renew` makes
    a new key beside the old one and gets its certificate.

    The token PIN is read from $CA_CLIENT_PIN (or --pin-env NAME, or --pin-file FILE) and a
    key file's passphrase from $CA_CLIENT_PASSPHRASE (or --passphrase-env, --passphrase-file),
    never from the command line.
    """


# -- options -------------------------------------------------------------------------------


def _apply(options: Sequence[Callable[[Any], Any]], func: F) -> F:
    decorated: Any = func
    for option in reversed(options):
        decorated = option(decorated)
    return cast(F, decorated)


def _token_options(*, required: bool) -> Callable[[F], F]:
    options = [
        click.option(
            "--module",
            metavar="PATH",
            envvar="CA_CLIENT_MODULE",
            show_envvar=True,
            help="Your token's PKCS#11 module (shared library). [default: SoftHSM's module]",
        ),
        click.option(
            "--token-label",
            metavar="LABEL",
            required=required,
            help="Label of the token that holds (or is to hold) the key.",
        ),
        click.option(
            "--key-label",
            metavar="LABEL",
            default="employer-key",
            show_default=True,
            help="Label of the key pair (and its certificate) on the token.",
        ),
        click.option(
            "--pin-env",
            metavar="NAME",
            default="CA_CLIENT_PIN",
            show_default=True,
            help="Environment variable holding the token's user PIN.",
        ),
        click.option(
            "--pin-file",
            metavar="FILE",
            type=click.Path(dir_okay=False),
            help="File holding the user PIN; used instead of the environment variable.",
        ),
    ]
    return lambda func: _apply(options, func)


def _key_file_options(func: F) -> F:
    options = [
        click.option(
            "--key-file",
            metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help=(
                "Keep the key in this file instead of on a token: keygen writes encrypted "
                "PKCS#8 PEM; csr and login also read unencrypted PEM/PKCS#8 (with a warning) "
                "and PKCS#12."
            ),
        ),
        click.option(
            "--passphrase-env",
            metavar="NAME",
            default="CA_CLIENT_PASSPHRASE",
            show_default=True,
            help="Environment variable holding the key file's passphrase.",
        ),
        click.option(
            "--passphrase-file",
            metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File holding the passphrase; used instead of the environment variable.",
        ),
    ]
    return _apply(options, func)


def _csr_options(func: F) -> F:
    options = [
        click.option("--subject-cn", metavar="TEXT", help=f"Common name. {_SUBJECT_NOTE}"),
        click.option(
            "--organization-identifier",
            metavar="TEXT",
            help=f"organizationIdentifier, e.g. VATXX-123456789. {_SUBJECT_NOTE}",
        ),
        click.option(
            "--csr",
            "csr_path",
            metavar="FILE",
            default="-",
            type=click.Path(dir_okay=False, allow_dash=True),
            help="Where to write the CSR (PEM).  [default: standard output]",
        ),
    ]
    return _apply(options, func)


# -- shared steps --------------------------------------------------------------------------


@contextlib.contextmanager
def _errors(token_label: str | None = None, key_label: str | None = None) -> Iterator[None]:
    """Turn what a user can act on into one `Error: ...` line and exit status 1."""
    try:
        yield
    # The layer's own messages for these two point at the CA server's set-up.
    except TokenNotFound:
        raise click.ClickException(
            f"no token labelled {token_label!r}: plug in your token, or check --token-label "
            "and --module"
        ) from None
    except KeyNotFound:
        raise click.ClickException(
            f"token {token_label!r} holds no key labelled {key_label!r}: check --key-label, "
            "or create the key with `ca-client keygen`"
        ) from None
    except (HSMError, ClientError) as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _open_token(
    module: str | None, token_label: str, pin_env: str, pin_file: str | None
) -> Iterator[Token]:
    module_path = module or find_softhsm_module()
    if module_path is None:
        raise click.UsageError("SoftHSM is not installed: name your token's module with --module")
    token = Token(
        keys.token_config(
            module_path=module_path, token_label=token_label, pin_env=pin_env, pin_file=pin_file
        )
    )
    try:
        yield token
    except PKCS11ModuleNotFound:
        # The layer's message points at the CA server's setting.
        raise click.ClickException(
            f"cannot load the PKCS#11 module {module_path}: check --module (or $CA_CLIENT_MODULE)"
        ) from None
    finally:
        token.close()  # logs out


def _passphrase(env_name: str, file: Path | None) -> bytes:
    if file is not None:
        try:
            # Only the line ending goes: spaces may be part of a passphrase.
            secret = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise click.ClickException(f"cannot read {file}: {exc.strerror or exc}") from None
        if not secret:
            raise click.ClickException(f"the passphrase file {file} is empty")
        return secret.encode()
    secret = os.environ.get(env_name, "")
    if not secret:
        raise click.ClickException(
            f"no key-file passphrase: set ${env_name}, or use --passphrase-file"
        )
    return secret.encode()


def _load_file_key(
    key_file: Path, passphrase_env: str, passphrase_file: Path | None
) -> keys.PrivateKey:
    """The key in ``key_file``; the passphrase is read only if the file is encrypted."""
    return keys.load_file_key(
        key_file,
        lambda: _passphrase(passphrase_env, passphrase_file),
        lambda message: click.echo(message, err=True),
    )


def _key_location(token_label: str | None, key_file: Path | None) -> None:
    if (token_label is None) == (key_file is None):
        raise click.UsageError("give either --token-label (key on a token) or --key-file")


def _write_csr(csr: x509.CertificateSigningRequest, path: str) -> None:
    pem = csr.public_bytes(Encoding.PEM).decode("ascii")
    if path == "-":
        click.echo(pem, nl=False)
        return
    try:
        Path(path).write_text(pem, encoding="ascii")
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the CSR to {path}: {exc.strerror or exc} "
            "(the key is in place: `ca-client csr` writes its CSR again)"
        ) from None
    click.echo(f"wrote the CSR to {path}", err=True)


# -- commands ------------------------------------------------------------------------------


@main.command()
@_token_options(required=False)
@_key_file_options
@click.option(
    "--algorithm",
    type=click.Choice([algorithm.value for algorithm in keys.CLIENT_ALGORITHMS]),
    default=KeyAlgorithm.EC_P256.value,
    show_default=True,
    help="Key type. The CSR is signed with SHA-384 for ec-p384 and rsa-3072, else SHA-256.",
)
@_csr_options
def keygen(
    *,
    module: str | None,
    token_label: str | None,
    key_label: str,
    pin_env: str,
    pin_file: str | None,
    key_file: Path | None,
    passphrase_env: str,
    passphrase_file: Path | None,
    algorithm: str,
    subject_cn: str | None,
    organization_identifier: str | None,
    csr_path: str,
) -> None:
    """Generate a key pair and write its CSR.

    On a token (--token-label) the private key is created unextractable: it can sign but
    never leave the token. In a file (--key-file) it is written as passphrase-encrypted
    PKCS#8 PEM, readable by you alone; an existing file is never overwritten.
    """
    _key_location(token_label, key_file)
    chosen = KeyAlgorithm(algorithm)
    subject = keys.subject_name(subject_cn, organization_identifier)
    with _errors(token_label, key_label):
        if key_file is not None:
            passphrase = _passphrase(passphrase_env, passphrase_file)
            private_key = keys.generate_file_key(key_file, chosen, passphrase)
            click.echo(f"wrote the encrypted {chosen.value} key to {key_file}", err=True)
            csr = keys.build_csr(private_key, subject)
        else:
            assert token_label is not None  # noqa: S101  (checked by _key_location)
            with _open_token(module, token_label, pin_env, pin_file) as token:
                signer = keys.generate_token_key(token, key_label, chosen)
                click.echo(
                    f"generated {chosen.value} key {key_label!r} on token {token_label!r}",
                    err=True,
                )
                csr = keys.build_csr(signer, subject)
    _write_csr(csr, csr_path)


@main.command()
@_token_options(required=False)
@_key_file_options
@_csr_options
def csr(
    *,
    module: str | None,
    token_label: str | None,
    key_label: str,
    pin_env: str,
    pin_file: str | None,
    key_file: Path | None,
    passphrase_env: str,
    passphrase_file: Path | None,
    subject_cn: str | None,
    organization_identifier: str | None,
    csr_path: str,
) -> None:
    """Write a CSR for an existing key on a token or in a key file."""
    _key_location(token_label, key_file)
    subject = keys.subject_name(subject_cn, organization_identifier)
    with _errors(token_label, key_label):
        if key_file is not None:
            private_key = _load_file_key(key_file, passphrase_env, passphrase_file)
            request = keys.build_csr(private_key, subject)
        else:
            assert token_label is not None  # noqa: S101  (checked by _key_location)
            with _open_token(module, token_label, pin_env, pin_file) as token:
                request = keys.build_csr(token.private_key(key_label), subject)
    _write_csr(request, csr_path)


@main.command("import-cert")
@click.argument("certificate_file", type=click.Path(dir_okay=False, path_type=Path))
@_token_options(required=True)
@click.option("--replace", is_flag=True, help="Replace a certificate already stored for the key.")
def import_cert(
    *,
    certificate_file: Path,
    module: str | None,
    token_label: str,
    key_label: str,
    pin_env: str,
    pin_file: str | None,
    replace: bool,
) -> None:
    """Store a certificate (PEM or DER file) on the token beside its key.

    The certificate gets the key's label and ID, so that signing software pairs the two.
    """
    with _errors(token_label, key_label):
        certificate = load_certificate_file(certificate_file)
        with _open_token(module, token_label, pin_env, pin_file) as token:
            try:
                import_certificate(token, key_label, certificate, replace=replace)
            except ValueError as exc:  # the certificate is for another key
                raise click.ClickException(str(exc)) from None
    click.echo(
        f"stored certificate {certificate.serial_number:x} ({certificate.subject.rfc4514_string()})"
        f" on token {token_label!r} beside key {key_label!r}"
    )


@main.command()
@_token_options(required=True)
def show(
    *, module: str | None, token_label: str, key_label: str, pin_env: str, pin_file: str | None
) -> None:
    """Show a key on the token and the certificate stored beside it."""
    with (
        _errors(token_label, key_label),
        _open_token(module, token_label, pin_env, pin_file) as token,
    ):
        summary = keys.describe_token_key(token, key_label)
    click.echo(f"key:          {summary.label} on token {token_label}")
    click.echo(f"algorithm:    {summary.algorithm.value}")
    click.echo(f"public key:   SHA-256 {summary.fingerprint}")
    certificate = summary.certificate
    if certificate is None:
        click.echo("certificate:  none stored")
        return
    click.echo(f"certificate:  {certificate.subject.rfc4514_string()}")
    click.echo(f"  serial:     {certificate.serial_number:x}")
    click.echo(f"  issuer:     {certificate.issuer.rfc4514_string()}")
    click.echo(f"  not after:  {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")


_URL_OPTION = click.option(
    "--url",
    "base_url",
    metavar="URL",
    envvar="CA_CLIENT_URL",
    show_envvar=True,
    required=True,
    help="The CA service, e.g. https://ca.example.gov (its public base URL).",
)
_CHALLENGE_OPTION = click.option(
    "--challenge",
    metavar="NONCE",
    help="The challenge shown on the service's web page (sign in there, or bind "
    "there); without it a new challenge is asked for.",
)
_CERTIFICATE_OPTION = click.option(
    "--certificate",
    "certificate_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The certificate (PEM; intermediates may follow it). Default for a token key: "
    "the certificate stored beside the key.",
)
_CAFILE_OPTION = click.option(
    "--cafile",
    metavar="FILE",
    type=click.Path(dir_okay=False, exists=True),
    help="CA certificates to trust for the service's https certificate (default: the system's).",
)


def _service_options(func: F) -> F:
    return _apply([_URL_OPTION, _CHALLENGE_OPTION, _CERTIFICATE_OPTION, _CAFILE_OPTION], func)


def _answer(
    *,
    purpose: str,
    service: remote.Service,
    challenge: str | None,
    certificate_file: Path | None,
    module: str | None,
    token_label: str | None,
    key_label: str,
    pin_env: str,
    pin_file: str | None,
    key_file: Path | None,
    passphrase_env: str,
    passphrase_file: Path | None,
) -> tuple[int, dict[str, Any]]:
    """Sign ``purpose``'s challenge with the key (token or file) and post the answer."""
    _key_location(token_label, key_file)
    path = "/api/v1/auth/certificate" if purpose == "login" else "/api/v1/bindings"
    with _errors(token_label, key_label):
        chain = load_certificate_chain(certificate_file) if certificate_file else []
        nonce = challenge.strip() if challenge else service.new_challenge(purpose)
        if key_file is not None:
            if not chain:
                raise click.UsageError("with --key-file, give the certificate with --certificate")
            private_key = _load_file_key(key_file, passphrase_env, passphrase_file)
            signature = remote.sign_challenge(private_key, purpose, nonce)
        else:
            assert token_label is not None  # noqa: S101  (checked by _key_location)
            with _open_token(module, token_label, pin_env, pin_file) as token:
                if not chain:
                    stored = keys.describe_token_key(token, key_label).certificate
                    if stored is None:
                        raise click.ClickException(
                            f"no certificate is stored beside key {key_label!r}: give "
                            "--certificate, or store it with `ca-client import-cert`"
                        )
                    chain = [stored]
                signature = remote.sign_challenge(token.private_key(key_label), purpose, nonce)
        return service.post(path, remote.answer_body(nonce, chain, signature))


@main.command()
@_service_options
@_token_options(required=False)
@_key_file_options
@click.option(
    "--token-file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the API bearer token to this file (readable by you alone) instead of stdout.",
)
def login(
    *,
    base_url: str,
    challenge: str | None,
    certificate_file: Path | None,
    cafile: str | None,
    token_file: Path | None,
    **key_options: Any,
) -> None:
    """Sign in with your certificate by signing a one-time challenge with its key.

    With --challenge (shown on the service's "Sign in with a certificate" page) the browser
    showing it is signed in. Without it, an API bearer token is printed (or written to
    --token-file) for the JSON API.
    """
    service = remote.Service(base_url, cafile=cafile)
    _, answer = _answer(
        purpose="login",
        service=service,
        challenge=challenge,
        certificate_file=certificate_file,
        **key_options,
    )
    if answer.get("signed_in") == "browser":
        click.echo(f"signed in: the browser showing the challenge is now {answer['username']}")
        return
    token = str(answer["token"])
    if token_file is None:
        click.echo(token)
    else:
        _write_private(token_file, token + "\n")
        click.echo(f"wrote the API token to {token_file}", err=True)
    click.echo(f"signed in as {answer['username']} until {answer['expires_at']}", err=True)


@main.command()
@_service_options
@_token_options(required=False)
@_key_file_options
@click.option(
    "--api-token-env",
    metavar="NAME",
    default="CA_API_TOKEN",
    show_default=True,
    help="Environment variable holding your API bearer token; needed without --challenge "
    "(to ask for a binding challenge as the signed-in administrator).",
)
def bind(
    *,
    base_url: str,
    challenge: str | None,
    certificate_file: Path | None,
    cafile: str | None,
    api_token_env: str,
    **key_options: Any,
) -> None:
    """Bind your tax-bureau certificate to your account, proving you hold its key.

    Take the challenge from the "Tax certificates" page of your account (--challenge), or
    let this command ask for one with your API token ($CA_API_TOKEN).
    """
    bearer = os.environ.get(api_token_env, "")
    if not challenge and not bearer:
        raise click.UsageError(
            f"give --challenge from your account page, or set ${api_token_env} to an API token"
        )
    service = remote.Service(base_url, cafile=cafile, bearer=bearer or None)
    _, answer = _answer(
        purpose="bind",
        service=service,
        challenge=challenge,
        certificate_file=certificate_file,
        **key_options,
    )
    click.echo(f"bound {answer['subject']} (serial {answer['serial']}) to your account")


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None


# -- renew ---------------------------------------------------------------------------------


def _window_refusal(
    info: renewal.RenewalInfo, *, by_certificate: bool, contacts_confirmed: bool
) -> ClientError | None:
    """Why the renewal cannot go ahead, told before a new key is made (None: it can)."""
    serial = info.serial
    if info.state == "revoked":
        return RenewalRefused(
            f"certificate {serial} was revoked: a revoked certificate cannot be renewed; file "
            "a new application"
        )
    if info.state == "renewed":
        return RenewalRefused(
            f"certificate {serial} was already renewed by certificate {info.renewed_by}: only "
            "the newest certificate can be renewed (give that one with --certificate)"
        )
    if info.state == "past_grace":
        return RenewalRefused(
            f"certificate {serial} expired on {renewal.day(info.not_after)}, too long ago to "
            f"renew online: file a new application (pre-filled from your record) at "
            f"{info.explanation_url}"
        )
    if info.state == "grace" and by_certificate:
        return RenewalRefused(
            f"certificate {serial} expired on {renewal.day(info.not_after)} and can no longer "
            f"sign you in: renew it in your browser at {info.explanation_url}, signing in with "
            "your password and the code sent by SMS (or your bound tax certificate), until "
            f"{renewal.day(info.renewable_until)}; or get an API token by password and SMS code "
            "(POST /api/v1/auth/token) and pass it with --api-token-env"
        )
    if info.state == "grace" and not contacts_confirmed:
        return RenewalRefused(
            f"certificate {serial} has expired: check that the administrator's mobile number "
            "and e-mail address on record are still current, then add --contacts-confirmed"
        )
    return None


def _old_certificate(
    token: Token | None, key_label: str, certificate_file: Path | None
) -> list[x509.Certificate]:
    if certificate_file is not None:
        return load_certificate_chain(certificate_file)
    assert token is not None  # noqa: S101  (a key file needs --certificate, checked before)
    stored = keys.describe_token_key(token, key_label).certificate
    if stored is None:
        raise click.ClickException(
            f"no certificate is stored beside key {key_label!r}: give --certificate, or "
            "store it with `ca-client import-cert`"
        )
    return [stored]


@main.command()
@_URL_OPTION
@_CERTIFICATE_OPTION
@_CAFILE_OPTION
@_token_options(required=False)
@_key_file_options
@click.option(
    "--new-key-label",
    metavar="LABEL",
    help="Label of the new key on the token. [default: the old label and today's date, "
    "e.g. employer-key-20261206]",
)
@click.option(
    "--new-key-file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File of the new key (encrypted with the same passphrase). [default: beside the old "
    "one, named after it and today's date, e.g. key-20261206.p8]",
)
@click.option(
    "--algorithm",
    type=click.Choice([algorithm.value for algorithm in keys.CLIENT_ALGORITHMS]),
    help="Type of the new key. [default: that of the old key]",
)
@click.option(
    "--out",
    "out_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the new certificate (PEM, then its intermediate CA); never "
    "overwritten. [default: <new key file>.cert.pem beside a key file; "
    "<new key label>.cert.pem beside --certificate, or here, for a token]",
)
@click.option(
    "--if-due",
    is_flag=True,
    help="Renew only inside the suggested renewal window; else say when it opens and exit 3.",
)
@click.option(
    "--supersede",
    is_flag=True,
    help="Revoke the old certificate (reason superseded) once the new one is issued; without "
    "it the old one stays valid until it expires.",
)
@click.option(
    "--api-token-env",
    metavar="NAME",
    help="Sign in with the API bearer token in this environment variable (from password + "
    "SMS code) instead of the old certificate: the way once that has expired.",
)
@click.option(
    "--contacts-confirmed",
    is_flag=True,
    help="After expiry: you checked that the administrator's mobile and e-mail on record "
    "are still current.",
)
def renew(
    *,
    base_url: str,
    certificate_file: Path | None,
    cafile: str | None,
    module: str | None,
    token_label: str | None,
    key_label: str,
    pin_env: str,
    pin_file: str | None,
    key_file: Path | None,
    passphrase_env: str,
    passphrase_file: Path | None,
    new_key_label: str | None,
    new_key_file: Path | None,
    algorithm: str | None,
    out_file: Path | None,
    if_due: bool,
    supersede: bool,
    api_token_env: str | None,
    contacts_confirmed: bool,
) -> None:
    """Renew your certificate with a new key pair, before it expires.

    Signs in with the current certificate (a challenge signed by its key), makes a new key
    beside the old one (on the same token, or in a new key file) of the same type, sends its
    CSR and writes the new certificate beside the new key; on a token it is also stored
    beside the new key. The old key and certificate stay as they are.

    Exit status: 0 renewed, 1 failed, 2 wrong options, 3 not due (--if-due), 4 waiting for an
    officer's review.
    """
    _renew_usage(token_label, key_file, certificate_file, new_key_label, new_key_file)
    bearer = None
    if api_token_env is not None:
        bearer = os.environ.get(api_token_env, "")
        if not bearer:
            raise click.UsageError(f"${api_token_env} (--api-token-env) is not set")
    service = remote.Service(base_url, cafile=cafile)
    with _errors(token_label, key_label), contextlib.ExitStack() as stack:
        place = _KeyPlace(
            token=None,
            token_label=token_label,
            key_label=key_label,
            key_file=key_file,
            passphrase_env=passphrase_env,
            passphrase_file=passphrase_file,
        )
        if token_label is not None:
            place.token = stack.enter_context(_open_token(module, token_label, pin_env, pin_file))
        chain = _old_certificate(place.token, key_label, certificate_file)
        info = renewal.renewal_info(service, renewal.serial_of(chain[0]))
        _check_window(
            info,
            if_due=if_due,
            by_certificate=bearer is None,
            contacts_confirmed=contacts_confirmed,
        )
        chosen = (
            KeyAlgorithm(algorithm) if algorithm else renewal.algorithm_of(chain[0].public_key())
        )
        new_key, target = place.new_key(
            new_key_label=new_key_label,
            new_key_file=new_key_file,
            out_file=out_file,
            certificate_file=certificate_file,
        )
        if bearer is None:
            bearer = renewal.certificate_login(service, place.old_signer(), chain)
        signed_in = dataclasses.replace(service, bearer=bearer)
        new_signer = new_key.obtain(chosen, lambda message: click.echo(message, err=True))
        try:
            outcome = renewal.request_renewal(
                signed_in,
                info.serial,
                keys.build_csr(new_signer, keys.subject_name()),
                supersede=supersede,
                contacts_confirmed=contacts_confirmed,
            )
        except (HSMError, ClientError) as exc:
            raise ClientError(f"{exc}; {new_key.left_behind()}") from None
        if isinstance(outcome, renewal.Pending):
            _report_pending(outcome, info.serial, new_key)
            sys.exit(EXIT_PENDING)
        _keep_certificate(outcome, new_key, new_signer, target)
    click.echo(
        f"renewed: certificate {renewal.serial_of(outcome.certificate)} (valid until "
        f"{renewal.day(outcome.certificate.not_valid_after_utc)}) replaces {info.serial}; "
        f"key {new_key.name}, certificate written to {target}"
    )
    click.echo(f"renew it in its turn with {new_key.next_time(target)}")
    if supersede:
        click.echo(f"certificate {info.serial} was revoked as superseded")


def _renew_usage(
    token_label: str | None,
    key_file: Path | None,
    certificate_file: Path | None,
    new_key_label: str | None,
    new_key_file: Path | None,
) -> None:
    _key_location(token_label, key_file)
    if key_file is not None and certificate_file is None:
        raise click.UsageError("with --key-file, give the certificate with --certificate")
    if new_key_label is not None and token_label is None:
        raise click.UsageError("--new-key-label is for a key on a token (--token-label)")
    if new_key_file is not None and key_file is None:
        raise click.UsageError("--new-key-file is for a key in a file (--key-file)")
    if (
        new_key_file is not None
        and key_file is not None
        and new_key_file.resolve() == key_file.resolve()
    ):
        raise click.UsageError("--new-key-file names the old key: a renewal needs a new key")


def _check_window(
    info: renewal.RenewalInfo, *, if_due: bool, by_certificate: bool, contacts_confirmed: bool
) -> None:
    """Go on only when the certificate can be renewed now; exits 3 (not due, with --if-due)
    or 4 (a renewal waits already) as nothing is wrong then."""
    if info.state == "not_due":
        opens, ends = renewal.day(info.window_start), renewal.day(info.not_after)
        if if_due:
            click.echo(
                f"not due: certificate {info.serial} can be renewed from {opens} (it expires "
                f"on {ends})"
            )
            sys.exit(EXIT_NOT_DUE)
        raise RenewalRefused(
            f"certificate {info.serial} can be renewed from {opens} (it expires on {ends}); "
            "with --if-due this is not an error"
        )
    if info.state == "pending" and info.resumable:
        # Approved, but its certificate was never made (the service failed): asking again
        # resumes it, with the key an earlier attempt left (``_KeyPlace.obtain``).
        click.echo(f"resuming the approved renewal of certificate {info.serial}", err=True)
        info = dataclasses.replace(info, state=info.clock_state)
    elif info.state == "pending":
        click.echo(
            f"pending: a renewal of certificate {info.serial} already waits for review; see "
            f"{info.explanation_url}"
        )
        sys.exit(EXIT_PENDING)
    refusal = _window_refusal(
        info, by_certificate=by_certificate, contacts_confirmed=contacts_confirmed
    )
    if refusal is not None:
        raise refusal


@dataclasses.dataclass
class _KeyPlace:
    """Where the old key is (a token, or a file), and so where the new one goes."""

    token: Token | None
    token_label: str | None
    key_label: str
    key_file: Path | None
    passphrase_env: str
    passphrase_file: Path | None

    def old_signer(self) -> Any:
        if self.token is not None:
            return self.token.private_key(self.key_label)
        assert self.key_file is not None  # noqa: S101  (checked by _key_location)
        return _load_file_key(self.key_file, self.passphrase_env, self.passphrase_file)

    def new_key(
        self,
        *,
        new_key_label: str | None,
        new_key_file: Path | None,
        out_file: Path | None,
        certificate_file: Path | None,
    ) -> tuple[renewal.NewKey, Path]:
        """The new key's place and the new certificate's file, checked to be free."""
        today = dt.datetime.now(dt.UTC).date()
        new_key: renewal.NewKey
        if self.token is not None:
            assert self.token_label is not None  # noqa: S101  (the token was opened with it)
            label = new_key_label or renewal.new_key_label(self.key_label, today)
            new_key = renewal.TokenKey(self.token, self.token_label, label)
            directory = certificate_file.parent if certificate_file else Path.cwd()
            target = out_file or renewal.certificate_file_for_label(label, directory)
        else:
            assert self.key_file is not None  # noqa: S101  (checked by _key_location)
            path = new_key_file or renewal.new_key_file(self.key_file, today)
            new_key = renewal.FileKey(
                path,
                lambda: _passphrase(self.passphrase_env, self.passphrase_file),
                lambda message: click.echo(message, err=True),
            )
            target = out_file or renewal.certificate_file_beside(path)
        if target.exists():
            raise ClientError(
                f"{target} exists already: certificates are never overwritten; move it away "
                "or choose --out"
            )
        new_key.refuse_taken()
        return new_key, target


def _report_pending(outcome: renewal.Pending, serial: str, new_key: renewal.NewKey) -> None:
    click.echo(
        f"pending: the renewal of certificate {serial} (application {outcome.application_id}, "
        f"{outcome.status}) needs review:"
    )
    for reason in outcome.reasons:
        click.echo(f"  - {reason}")
    click.echo(
        f"The new key {new_key.name} is kept for it: once the certificate is issued, download "
        f"it (GET /api/v1/applications/{outcome.application_id}/certificate) and keep it "
        "beside that key (`ca-client import-cert --key-label ...` for a token)."
    )


def _keep_certificate(
    outcome: renewal.Issued, new_key: renewal.NewKey, new_signer: Any, target: Path
) -> None:
    """Write the issued certificate beside the new key; on failure say how to get it again."""
    certificate = outcome.certificate
    again = (
        f"certificate {renewal.serial_of(certificate)} was issued: download it again with "
        f"GET /api/v1/applications/{outcome.application_id}/certificate"
    )
    if certificate.public_key() != new_signer.public_key():
        raise ClientError(f"the service certified another key than {new_key.name}; {again}")
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in [certificate, *outcome.intermediates])
    try:
        renewal.write_new_file(target, pem)
    except ClientError as exc:
        raise ClientError(f"{exc}; {again}") from None
    try:
        new_key.keep(certificate)
    except (HSMError, ValueError) as exc:
        raise ClientError(
            f"{exc}; the certificate is in {target}: store it beside the key with "
            f"`ca-client import-cert {target} --key-label {new_key.name}`"
        ) from None
