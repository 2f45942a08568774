"""HSM faults at the Token: a token that goes away and comes back, a deleted key, wrong PINs
tried once only (every failed C_Login counts towards locking the token's PIN)."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import TokenFlag

from hsm import (
    HSMConfig,
    KeyAlgorithm,
    KeyNotFound,
    SignatureScheme,
    Token,
    TokenNotPresent,
    WrongPin,
    login_attempts,
)
from hsm.token import RESCAN_INTERVAL, _module_for
from tests.hsm.support import SoftHSMSetup, raw_session, token_moved_away

ECDSA = SignatureScheme.ECDSA_SHA256


def _slot_flags(setup: SoftHSMSetup, label: str) -> TokenFlag:
    return pkcs11.lib(setup.module).get_token(token_label=label).flags


def _signing_token(softhsm: SoftHSMSetup, label: str) -> Token:
    """A new token with an EC key "ec" that has signed once (so the layer knows the key)."""
    token = Token(softhsm.config(label, pool_size=2))
    token.generate_key("ec", KeyAlgorithm.EC_P256)
    token.sign("ec", b"before", ECDSA)
    return token


def test_removed_token_answers_unavailable_then_recovers(
    softhsm: SoftHSMSetup, tmp_path: Path
) -> None:
    token = _signing_token(softhsm, "gone")
    with token_moved_away(softhsm.conf, token.label, tmp_path):
        for _ in range(5):
            started = time.monotonic()
            # Not KeyNotFound (a set-up error, 500): the token went, so 503 and try later.
            with pytest.raises(TokenNotPresent, match=token.label):
                token.sign("ec", b"while away", ECDSA)
            assert time.monotonic() - started < 2
    deadline = time.monotonic() + 10 * RESCAN_INTERVAL
    while True:
        try:
            signature = token.sign("ec", b"back", ECDSA)
            break
        except TokenNotPresent:
            assert time.monotonic() < deadline, "the token was not picked up again"
            time.sleep(RESCAN_INTERVAL / 4)
    public = token.public_key("ec")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"back", ec.ECDSA(hashes.SHA256()))
    token.close()


def test_token_removed_just_after_a_rescan_is_unavailable_not_a_missing_key(
    softhsm: SoftHSMSetup, tmp_path: Path
) -> None:
    # Found once under load in CI: the module had been rescanned less than RESCAN_INTERVAL
    # before the token went, so it could not be asked again, and the missing key was taken
    # for a deleted one (KeyNotFound, a 500) instead of a token away (503).
    token = _signing_token(softhsm, "gone-soon")
    with token_moved_away(softhsm.conf, token.label, tmp_path):
        _module_for(token.config.module_path).rescanned_at = time.monotonic()  # just rescanned
        with pytest.raises(TokenNotPresent, match=token.label):
            token.sign("ec", b"while away", ECDSA)
    token.close()


def test_deleted_key_is_still_key_not_found(softhsm: SoftHSMSetup) -> None:
    token = Token(softhsm.config("delkey", pool_size=2))
    token.generate_key("ec", KeyAlgorithm.EC_P256)
    token.generate_key("other", KeyAlgorithm.EC_P256)
    token.sign("ec", b"before", ECDSA)
    with raw_session(token, "other", rw=True) as session:
        for obj in session.get_objects({pkcs11.Attribute.LABEL: "ec"}):
            obj.destroy()
    time.sleep(RESCAN_INTERVAL)  # let the layer rescan, and find the token without the key
    with pytest.raises(KeyNotFound, match="'ec'"):
        token.sign("ec", b"after", ECDSA)
    token.sign("other", b"still fine", ECDSA)
    token.close()


def test_wrong_pin_is_offered_to_the_token_once(softhsm: SoftHSMSetup) -> None:
    label, pin = softhsm.new_token("pin1")
    wrong = secrets.token_hex(8)
    config = HSMConfig(
        module_path=softhsm.module, token_label=label, pin=wrong, pin_source="$SOME_PIN_VAR"
    )
    assert not _slot_flags(softhsm, label) & TokenFlag.USER_PIN_COUNT_LOW
    token = Token(config)
    with pytest.raises(WrongPin, match=r"rejected the PIN.*\$SOME_PIN_VAR") as caught:
        token.check_login()
    assert wrong not in str(caught.value)
    assert pin not in str(caught.value)
    # The token counted one failure...
    assert _slot_flags(softhsm, label) & TokenFlag.USER_PIN_COUNT_LOW
    # ...and no more follow, from this Token or another with the same PIN, whatever is asked.
    for attempt in (token.check_login, lambda: Token(config).has_key("any")):
        for _ in range(3):
            with pytest.raises(WrongPin, match=label):
                attempt()
    assert login_attempts(softhsm.module, label) == 1
    # The right PIN is still tried, and clears the token's failure count.
    right = Token(HSMConfig(module_path=softhsm.module, token_label=label, pin=pin))
    right.check_login()
    assert login_attempts(softhsm.module, label) == 2
    assert not _slot_flags(softhsm, label) & TokenFlag.USER_PIN_COUNT_LOW
    right.close()


def test_pin_changed_while_logged_in_is_not_retried(softhsm: SoftHSMSetup) -> None:
    token = Token(softhsm.config("pin2", pool_size=2))
    token.generate_key("ec", KeyAlgorithm.EC_P256)
    token.sign("ec", b"logged in", ECDSA)
    assert login_attempts(softhsm.module, token.label) == 1
    with raw_session(token, "ec", rw=True) as session:
        session.set_pin(token.config.pin, secrets.token_hex(8))
    # The login survives until something ends it: here the module finalised underneath.
    token.sign("ec", b"still logged in", ECDSA)
    pkcs11.lib(token.config.module_path).finalize()
    with pytest.raises(WrongPin, match=token.label):
        token.sign("ec", b"after", ECDSA)
    for _ in range(5):
        with pytest.raises(WrongPin, match=token.label):
            token.sign("ec", b"again", ECDSA)
    assert login_attempts(softhsm.module, token.label) == 2  # the first login, one failure
    token.close()
