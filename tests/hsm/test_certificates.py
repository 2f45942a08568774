"""Certificate objects beside their keys: what PKCS#11 middleware needs to pair them."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from pkcs11 import Attribute, CertificateType, ObjectClass

from hsm import (
    DuplicateCertificateLabel,
    KeyAlgorithm,
    KeyNotFound,
    Token,
)
from tests.hsm.support import SoftHSMSetup, raw_session
from tests.hsm.support import issue_certificate as issue


def der_integer(value: int) -> bytes:
    """DER INTEGER of a positive number below 2**1000 (CKA_SERIAL_NUMBER's encoding)."""
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(content)]) + content


def new_key(token: Token, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> str:
    label = f"cert-{secrets.token_hex(3)}"
    token.generate_key(label, algorithm)
    return label


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048])
def test_certificate_is_stored_beside_its_key(token: Token, algorithm: KeyAlgorithm) -> None:
    label = new_key(token, algorithm)
    certificate = issue(token.public_key(label))
    der = certificate.public_bytes(Encoding.DER)

    token.store_certificate(label, der)

    assert token.certificate(label) == der
    with raw_session(token, label) as session:
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        [stored] = session.get_objects(
            {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
        )
        attributes = stored.get_attributes(
            [
                Attribute.CERTIFICATE_TYPE,
                Attribute.TOKEN,
                Attribute.PRIVATE,
                Attribute.LABEL,
                Attribute.ID,
                Attribute.SUBJECT,
                Attribute.ISSUER,
                Attribute.SERIAL_NUMBER,
                Attribute.VALUE,
            ]
        )
        key_id = bytes(private[Attribute.ID])
    assert attributes == {
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,  # how middleware pairs the certificate with the key
        Attribute.SUBJECT: certificate.subject.public_bytes(),
        Attribute.ISSUER: certificate.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: der_integer(certificate.serial_number),
        Attribute.VALUE: der,
    }


def test_no_certificate_stored(token: Token) -> None:
    assert token.certificate(new_key(token)) is None


def test_second_certificate_only_replaces_when_asked(token: Token) -> None:
    label = new_key(token)
    first = issue(token.public_key(label), "First").public_bytes(Encoding.DER)
    second = issue(token.public_key(label), "Second").public_bytes(Encoding.DER)
    token.store_certificate(label, first)

    with pytest.raises(DuplicateCertificateLabel, match="replace it explicitly"):
        token.store_certificate(label, second)
    assert token.certificate(label) == first

    token.store_certificate(label, second, replace=True)
    assert token.certificate(label) == second
    with raw_session(token, label) as session:
        certificates = list(
            session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
        )
    assert len(certificates) == 1


def test_certificate_for_another_key_is_refused(token: Token) -> None:
    label = new_key(token)
    other = issue(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ValueError, match="another key"):
        token.store_certificate(label, other.public_bytes(Encoding.DER))
    assert token.certificate(label) is None


def test_certificate_needs_its_key(token: Token) -> None:
    certificate = issue(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyNotFound):
        token.store_certificate("no-such-key", certificate.public_bytes(Encoding.DER))


def test_not_a_certificate_is_refused(token: Token) -> None:
    label = new_key(token)
    certificate = issue(token.public_key(label))
    with pytest.raises(ValueError, match=r"not a DER-encoded X\.509 certificate"):
        token.store_certificate(label, certificate.public_bytes(Encoding.PEM))


def test_certificate_is_readable_before_login(token: Token, softhsm: SoftHSMSetup) -> None:
    """Middleware lists certificates before it asks for the PIN: CKA_PRIVATE is false."""
    label = new_key(token)
    der = issue(token.public_key(label)).public_bytes(Encoding.DER)
    token.store_certificate(label, der)
    # Another process, which never logs in (this one is logged in, so it would see anything).
    script = (
        "import json, sys, pkcs11\n"
        "from pkcs11 import Attribute, ObjectClass\n"
        "module, token_label, label = sys.argv[1:]\n"
        "session = pkcs11.lib(module).get_token(token_label=token_label).open()\n"
        "found = session.get_objects({Attribute.LABEL: label})\n"
        "print(json.dumps({o[Attribute.CLASS].name: o[Attribute.VALUE].hex()\n"
        "    for o in found if o[Attribute.CLASS] == ObjectClass.CERTIFICATE}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, softhsm.module, token.label, label],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm.conf)},
    )
    assert json.loads(result.stdout) == {"CERTIFICATE": der.hex()}
