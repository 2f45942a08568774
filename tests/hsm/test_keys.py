"""Key generation and lookup: keys that can sign and can never leave the token."""

from __future__ import annotations

import copy

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import Attribute, ObjectClass

from hsm import (
    DuplicateKeyLabel,
    HSMECPrivateKey,
    HSMRSAPrivateKey,
    KeyAlgorithm,
    KeyNotFound,
    Token,
)
from tests.hsm.support import raw_session

# The private-key attributes that hold the secret, per key type.
SECRETS = {
    True: (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.PRIME_2),
    False: (Attribute.VALUE,),
}


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_private_key_can_sign_and_never_leave(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm
) -> None:
    label = keys[algorithm]
    with raw_session(token, label) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        flags = key.get_attributes(
            [
                Attribute.TOKEN,
                Attribute.PRIVATE,
                Attribute.SENSITIVE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.NEVER_EXTRACTABLE,
                Attribute.SIGN,
                Attribute.SIGN_RECOVER,
                Attribute.DECRYPT,
                Attribute.UNWRAP,
                Attribute.DERIVE,
                Attribute.MODIFIABLE,
            ]
        )
        assert flags == {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.ALWAYS_SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.NEVER_EXTRACTABLE: True,
            Attribute.SIGN: True,
            Attribute.SIGN_RECOVER: False,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
            Attribute.MODIFIABLE: False,
        }
        for secret in SECRETS[algorithm.is_rsa]:
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[secret]
        # Not even someone holding the PIN can switch decryption on later.
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            key[Attribute.DECRYPT] = True


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P256])
def test_public_half_shares_label_and_id_and_only_verifies(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm
) -> None:
    label = keys[algorithm]
    handle = token.find_key(label)
    assert len(handle.key_id) == 16
    with raw_session(token, label) as session:
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
        assert public[Attribute.ID] == handle.key_id
        assert public[Attribute.TOKEN] is True
        assert public[Attribute.VERIFY] is True
        assert public[Attribute.ENCRYPT] is False
        assert public[Attribute.WRAP] is False


def test_find_key_reports_each_algorithm(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    for algorithm, label in keys.items():
        handle = token.find_key(label)
        assert (handle.label, handle.algorithm) == (label, algorithm)
        assert token.has_key(label)
    ids = {token.find_key(label).key_id for label in keys.values()}
    assert len(ids) == len(keys)  # random, never reused


def test_duplicate_label_is_refused(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    label = keys[KeyAlgorithm.EC_P256]
    original = token.find_key(label)
    for algorithm in (KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048):
        with pytest.raises(DuplicateKeyLabel, match=label):
            token.generate_key(label, algorithm)
    with raw_session(token, label) as session:
        ids = [obj[Attribute.ID] for obj in session.get_objects({Attribute.LABEL: label})]
    assert ids == [original.key_id] * 2  # still one pair: the original


def test_unknown_label(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    assert not token.has_key("no-such-key")
    with pytest.raises(KeyNotFound, match="no-such-key"):
        token.find_key("no-such-key")
    with pytest.raises(KeyNotFound):
        token.private_key("no-such-key")


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [
        (KeyAlgorithm.RSA_2048, 2048),
        (KeyAlgorithm.RSA_3072, 3072),
        (KeyAlgorithm.RSA_4096, 4096),
        (KeyAlgorithm.EC_P256, 256),
        (KeyAlgorithm.EC_P384, 384),
    ],
)
def test_public_key_and_adapter_describe_the_key(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm, size: int
) -> None:
    label = keys[algorithm]
    public = token.public_key(label)
    key = token.private_key(label)
    assert key.public_key() == public
    assert key.key_size == size
    if algorithm.is_rsa:
        assert isinstance(public, rsa.RSAPublicKey)
        assert isinstance(key, HSMRSAPrivateKey)
        assert isinstance(key, rsa.RSAPrivateKey)  # what cryptography's builders check
        assert public.public_numbers().e == 65537
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(key, HSMECPrivateKey)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == algorithm.curve_name


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P256])
def test_adapter_refuses_everything_that_needs_the_secret(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm
) -> None:
    key = token.private_key(keys[algorithm])
    with pytest.raises(TypeError, match="never leaves the HSM"):
        key.private_numbers()
    with pytest.raises(TypeError, match="never leaves the HSM"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if isinstance(key, HSMRSAPrivateKey):
        with pytest.raises(TypeError, match="never leaves the HSM"):
            key.decrypt(b"\0" * 256, padding.PKCS1v15())
    else:
        peer = ec.generate_private_key(ec.SECP256R1()).public_key()
        with pytest.raises(TypeError, match="never leaves the HSM"):
            key.exchange(ec.ECDH(), peer)
    # A copy is a reference to the same key in the token, not key material.
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key
