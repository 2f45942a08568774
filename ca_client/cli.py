"""The `ca-client` command line: employer keys on a token or in a file, CSRs, certificates.

Secrets never come from arguments (other local users can read a process's command line): the
token PIN and the key-file passphrase come from an environment variable or a file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_client import keys, remote
from ca_client.certificates import (
    import_certificate,
    load_certificate_chain,
    load_certificate_file,
)
from ca_client.errors import ClientError
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
    certificate the CA issues on the token beside its key.

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


def _service_options(func: F) -> F:
    options = [
        click.option(
            "--url",
            "base_url",
            metavar="URL",
            envvar="CA_CLIENT_URL",
            show_envvar=True,
            required=True,
            help="The CA service, e.g. https://ca.example.gov (its public base URL).",
        ),
        click.option(
            "--challenge",
            metavar="NONCE",
            help="The challenge shown on the service's web page (sign in there, or bind "
            "there); without it a new challenge is asked for.",
        ),
        click.option(
            "--certificate",
            "certificate_file",
            metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The certificate (PEM; intermediates may follow it). Default for a token key: "
            "the certificate stored beside the key.",
        ),
        click.option(
            "--cafile",
            metavar="FILE",
            type=click.Path(dir_okay=False, exists=True),
            help="CA certificates to trust for the service's https certificate (default: the "
            "system's).",
        ),
    ]
    return _apply(options, func)


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
