"""The PKCS#11 layer against real SoftHSM tokens created for this test session."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass

from hsm import (
    DuplicateKeyLabel,
    HSMConfig,
    KeyAlgorithm,
    KeyNotFound,
    PinUnavailable,
    PKCS11ModuleNotFound,
    SessionLost,
    SignatureScheme,
    Token,
    TokenNotFound,
    find_softhsm_module,
)
from tests.conftest import HsmEnv
from tests.pki_tools import openssl_verify

MODULE = find_softhsm_module() or ""
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSM test")])


@pytest.fixture(scope="module")
def token(hsm_env: HsmEnv) -> Token:
    label, pin = hsm_env.new_token("hsm")
    return Token(HSMConfig(module_path=MODULE, token_label=label, pin=pin, pool_size=3))


@pytest.fixture(scope="module")
def keys(token: Token) -> dict[KeyAlgorithm, str]:
    """One key per algorithm (RSA-4096 is slow to generate in SoftHSM: made once)."""
    labels = {}
    for algorithm in KeyAlgorithm:
        label = f"{algorithm.value}-{secrets.token_hex(3)}"
        token.generate_key(label, algorithm)
        labels[algorithm] = label
    return labels


def _self_signed(
    token: Token, label: str, algorithm: hashes.SHA256 | hashes.SHA384, pss: bool = False
) -> x509.Certificate:
    key = token.private_key(label)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # tolerate clock skew
    builder = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if pss:
        return builder.sign(
            key,
            algorithm,
            rsa_padding=padding.PSS(
                mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH
            ),
        )
    return builder.sign(key, algorithm)


def _raw_private_object(token: Token, label: str) -> object:
    # Straight through python-pkcs11, bypassing our layer, as an attacker with the PIN would.
    lib = pkcs11.lib(MODULE)
    session = lib.get_token(token_label=token.label).open()
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_generated_keys_cannot_leave_the_token(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm
) -> None:
    key = _raw_private_object(token, keys[algorithm])
    assert key[Attribute.SENSITIVE] is True  # type: ignore[index]
    assert key[Attribute.EXTRACTABLE] is False  # type: ignore[index]
    assert key[Attribute.ALWAYS_SENSITIVE] is True  # type: ignore[index]
    assert key[Attribute.NEVER_EXTRACTABLE] is True  # type: ignore[index]
    assert key[Attribute.SIGN] is True  # type: ignore[index]
    for capability in (Attribute.DECRYPT, Attribute.UNWRAP, Attribute.DERIVE):
        assert key[capability] is False  # type: ignore[index]
    secret = Attribute.PRIVATE_EXPONENT if algorithm.is_rsa else Attribute.VALUE
    with pytest.raises(pkcs11.exceptions.AttributeSensitive):
        key[secret]  # type: ignore[index]


def test_duplicate_label_refused(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    with pytest.raises(DuplicateKeyLabel):
        token.generate_key(keys[KeyAlgorithm.EC_P256], KeyAlgorithm.EC_P256)


def test_find_key_reports_algorithm(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    for algorithm, label in keys.items():
        assert token.find_key(label).algorithm is algorithm
    with pytest.raises(KeyNotFound):
        token.find_key("no-such-key")


@pytest.mark.parametrize(
    ("algorithm", "digest", "pss"),
    [
        (KeyAlgorithm.EC_P256, hashes.SHA256(), False),
        (KeyAlgorithm.EC_P384, hashes.SHA384(), False),
        (KeyAlgorithm.RSA_2048, hashes.SHA256(), False),
        (KeyAlgorithm.RSA_2048, hashes.SHA256(), True),
        (KeyAlgorithm.RSA_3072, hashes.SHA384(), True),
        (KeyAlgorithm.RSA_4096, hashes.SHA384(), False),
    ],
)
def test_certificate_adapter(
    token: Token,
    keys: dict[KeyAlgorithm, str],
    algorithm: KeyAlgorithm,
    digest: hashes.SHA256 | hashes.SHA384,
    pss: bool,
) -> None:
    cert = _self_signed(token, keys[algorithm], digest, pss=pss)
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == token.public_key(keys[algorithm])
    if pss:
        params = cert.signature_algorithm_parameters
        assert isinstance(params, padding.PSS)
        assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSASSA_PSS


def test_openssl_accepts_hsm_signed_certificate(
    token: Token, keys: dict[KeyAlgorithm, str], tmp_path: Path
) -> None:
    for algorithm in (KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_2048):
        cert = _self_signed(token, keys[algorithm], hashes.SHA256())
        proc = openssl_verify(tmp_path, cert, roots=[cert])
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_2048])
def test_csr_crl_and_ocsp_adapters(
    token: Token, keys: dict[KeyAlgorithm, str], algorithm: KeyAlgorithm
) -> None:
    key = token.private_key(keys[algorithm])
    csr = x509.CertificateSigningRequestBuilder().subject_name(NAME).sign(key, hashes.SHA256())
    assert csr.is_signature_valid

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)  # tolerate clock skew
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert crl.is_signature_valid(key.public_key())

    issuer = _self_signed(token, keys[algorithm], hashes.SHA256())
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=issuer,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + dt.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(key, hashes.SHA256())
    )
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(
            response.signature, response.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


def test_private_key_never_exports(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    key = token.private_key(keys[KeyAlgorithm.EC_P256])
    with pytest.raises(TypeError, match="never leaves the HSM"):
        key.private_numbers()


def test_eight_threads_sign_concurrently(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    label = keys[KeyAlgorithm.EC_P256]
    public = token.public_key(label)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(40):
                data = f"thread {n} message {i}".encode()
                signature = token.sign(label, data, SignatureScheme.ECDSA_SHA256)
                public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except BaseException as exc:  # collected and re-raised in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert token._open <= token.config.pool_size  # more threads than sessions: they queued


def test_forked_child_reinitialises_and_signs(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    label = keys[KeyAlgorithm.EC_P256]
    public = token.public_key(label)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    token.sign(label, b"parent first", SignatureScheme.ECDSA_SHA256)  # parent holds sessions
    parent_sessions = list(token._idle)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into pytest
        status = b"fail"
        try:
            signature = token.sign(label, b"child", SignatureScheme.ECDSA_SHA256)
            public.verify(signature, b"child", ec.ECDSA(hashes.SHA256()))
            fresh = all(p not in parent_sessions for p in token._idle)
            if token._pid == os.getpid() and fresh and token._abandoned:
                status = b"ok"
        finally:
            os.write(write_end, status)
            os._exit(0)
    os.close(write_end)
    _, exit_status = os.waitpid(pid, 0)
    assert os.read(read_end, 16) == b"ok"
    assert exit_status == 0
    signature = token.sign(label, b"parent after", SignatureScheme.ECDSA_SHA256)
    public.verify(signature, b"parent after", ec.ECDSA(hashes.SHA256()))


def test_lost_session_is_reopened_once(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    label = keys[KeyAlgorithm.EC_P256]
    token.sign(label, b"warm", SignatureScheme.ECDSA_SHA256)
    # Close every session of this token behind the layer's back (as an HSM restart would).
    for pooled in token._idle:
        pooled.session.close()
    signature = token.sign(label, b"after loss", SignatureScheme.ECDSA_SHA256)
    public = token.public_key(label)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"after loss", ec.ECDSA(hashes.SHA256()))


def test_session_lost_when_reopening_fails(hsm_env: HsmEnv) -> None:
    label, pin = hsm_env.new_token("lost")
    token = Token(HSMConfig(module_path=MODULE, token_label=label, pin=pin, pool_size=1))
    token.generate_key("k", KeyAlgorithm.EC_P256)
    calls = 0

    def always_lost(_pooled: object) -> bytes:
        nonlocal calls
        calls += 1
        raise pkcs11.exceptions.SessionHandleInvalid

    with pytest.raises(SessionLost, match=label):
        token._run(always_lost)
    assert calls == 2  # the first try and exactly one retry on a reopened session


def _fresh_process(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_wrong_pin_in_a_fresh_process(hsm_env: HsmEnv) -> None:
    # Login state is per process, and this process is logged in already: use a new one.
    label, _pin = hsm_env.new_token("pin")
    code = (
        "from hsm import *\n"
        f"t = Token(HSMConfig(module_path={MODULE!r}, token_label={label!r}, pin='wrong-pin'))\n"
        "try:\n    t.has_key('x')\nexcept WrongPin as e:\n    print('WrongPin:', e)\n"
    )
    proc = _fresh_process(code, {})
    assert "WrongPin:" in proc.stdout, proc.stderr
    assert "wrong-pin" not in proc.stdout


def test_unknown_token_and_module(tmp_path: Path) -> None:
    with pytest.raises(TokenNotFound, match="nope"):
        Token(HSMConfig(module_path=MODULE, token_label="nope", pin="x")).has_key("k")
    missing = str(tmp_path / "libmissing.so")
    with pytest.raises(PKCS11ModuleNotFound, match="libmissing"):
        Token(HSMConfig(module_path=missing, token_label="t", pin="x")).has_key("k")


def test_pin_sources(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\n")
    config = HSMConfig.from_sources(
        module_path=MODULE, token_label="t", pin_env="P", pin_file=str(pin_file), environ={}
    )
    assert config.pin == "from-file"
    assert "from-file" not in repr(config)
    from_env = HSMConfig.from_sources(
        module_path=MODULE, token_label="t", pin_env="P", pin_file=None, environ={"P": "e"}
    )
    assert from_env.pin == "e"
    with pytest.raises(PinUnavailable):
        HSMConfig.from_sources(
            module_path=MODULE, token_label="t", pin_env="P", pin_file=None, environ={}
        )
