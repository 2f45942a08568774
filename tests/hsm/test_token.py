"""Token: threads, forked workers, lost sessions and the errors operators see."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsm import (
    HSMConfig,
    KeyAlgorithm,
    KeyNotFound,
    PKCS11ModuleNotFound,
    SessionLost,
    SignatureScheme,
    Token,
    TokenNotFound,
    WrongPin,
)
from hsm.token import _module_for
from tests.hsm.support import SoftHSMSetup, explicit_pss

ECDSA = SignatureScheme.ECDSA_SHA256
REPO = Path(__file__).resolve().parents[2]
# p11-kit's proxy module re-exports the modules registered with p11-kit (Debian's softhsm2
# registers SoftHSM) and, unlike SoftHSM, follows PKCS#11's fork rules itself.
P11_KIT_PROXY = next(
    (
        path
        for path in (
            "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
            "/usr/lib/x86_64-linux-gnu/libp11-kit.so.0",
            "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
            "/usr/lib/aarch64-linux-gnu/libp11-kit.so.0",
            "/usr/lib64/p11-kit-proxy.so",
            "/usr/lib64/libp11-kit.so.0",
        )
        if Path(path).is_file()
    ),
    None,
)


def _verify_ecdsa(token: Token, label: str, signature: bytes, data: bytes) -> None:
    public = token.public_key(label)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def own_token(softhsm: SoftHSMSetup) -> Iterator[tuple[Token, str]]:
    """A token of the test's own, with one EC key, for tests that break sessions."""
    token = Token(softhsm.config("own", pool_size=2))
    label = "ec"
    token.generate_key(label, KeyAlgorithm.EC_P256)
    yield token, label
    token.close()


# -- threads ----------------------------------------------------------------------------------


def test_eight_threads_share_a_smaller_pool(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    assert token.config.pool_size < 8
    ec_label, rsa_label = keys[KeyAlgorithm.EC_P256], keys[KeyAlgorithm.RSA_2048]
    ec_public, rsa_public = token.public_key(ec_label), token.public_key(rsa_label)
    assert isinstance(ec_public, ec.EllipticCurvePublicKey)
    assert isinstance(rsa_public, rsa.RSAPublicKey)
    start = threading.Barrier(8)
    failures: list[str] = []
    sessions_seen: set[int] = set()

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(50):
                data = f"thread {n} message {i}".encode()
                if n % 2:
                    signature = token.sign(rsa_label, data, SignatureScheme.RSA_PSS_SHA256)
                    rsa_public.verify(
                        signature, data, explicit_pss(hashes.SHA256()), hashes.SHA256()
                    )
                else:
                    signature = token.sign(ec_label, data, ECDSA)
                    ec_public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
                sessions_seen.update(id(p.session) for p in list(token._idle))
        except BaseException:  # reported by the main thread
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert token._open <= token.config.pool_size
    assert len(sessions_seen) <= token.config.pool_size  # threads queued for the few sessions


# -- fork -------------------------------------------------------------------------------------


def test_forked_child_initialises_the_module_itself(
    token: Token, keys: dict[KeyAlgorithm, str]
) -> None:
    label = keys[KeyAlgorithm.EC_P256]
    _verify_ecdsa(token, label, token.sign(label, b"parent", ECDSA), b"parent")
    parent_module = token._module
    assert parent_module is not None
    parent_sessions = list(token._idle)
    parent_anchor = parent_module.logins[token.label].anchor
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports through the pipe and never returns into pytest
        report: dict[str, object] = {}
        try:
            signature = token.sign(label, b"child", ECDSA)
            _verify_ecdsa(token, label, signature, b"child")
            module = token._module
            assert module is not None
            report = {
                "new state": module is not parent_module,
                "pid": module.pid == os.getpid(),
                # SoftHSM does not notice forks, so its C_Initialize answers "already
                # initialised" and the layer finalises the child's private copy first.
                "how": module.how,
                "fresh sessions": not any(p is q for p in token._idle for q in parent_sessions),
                "fresh login": module.logins[token.label].anchor is not parent_anchor,
            }
        except BaseException:
            report = {"error": traceback.format_exc()}
        finally:
            os.write(write_end, json.dumps(report).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert report == {
        "new state": True,
        "pid": True,
        "how": "C_Finalize+C_Initialize after fork",
        "fresh sessions": True,
        "fresh login": True,
    }
    # The parent goes on with its own sessions: nothing the child did closed them.
    _verify_ecdsa(token, label, token.sign(label, b"parent again", ECDSA), b"parent again")
    assert token._module is parent_module
    assert all(any(p is q for q in token._idle) for p in parent_sessions)


_FORK_THROUGH_P11_KIT = """
import json, os, sys
from hsm import HSMConfig, SignatureScheme, Token, TokenNotFound

module, label, key = sys.argv[1:]
token = Token(HSMConfig(module_path=module, token_label=label, pin=os.environ["TEST_PIN"]))
try:
    token.sign(key, b"parent", SignatureScheme.ECDSA_SHA256)
except TokenNotFound:
    print(json.dumps({"skip": "p11-kit does not offer the SoftHSM token"}))
    sys.exit(0)
report = {"parent": token._module.how}
pid = os.fork()
if pid == 0:
    token.sign(key, b"child", SignatureScheme.ECDSA_SHA256)
    os._exit(0 if token._module.how == "C_Initialize after fork" else 3)
report["child exit"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
token.sign(key, b"parent again", SignatureScheme.ECDSA_SHA256)
print(json.dumps(report))
"""


@pytest.mark.skipif(P11_KIT_PROXY is None, reason="p11-kit is not installed")
def test_fork_aware_module_gets_c_initialize_alone(softhsm: SoftHSMSetup) -> None:
    # In a process of its own: p11-kit loads SoftHSM too, which this process has initialised.
    config = softhsm.config("p11kit")
    token = Token(config)
    token.generate_key("ec", KeyAlgorithm.EC_P256)
    token.close()
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_THROUGH_P11_KIT, str(P11_KIT_PROXY), config.token_label, "ec"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "TEST_PIN": config.pin},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    # No C_Finalize in the child: a module that tracks forks is only asked to C_Initialize.
    assert report == {"parent": "C_Initialize", "child exit": 0}


# -- lost sessions ----------------------------------------------------------------------------


def test_closed_sessions_are_reopened(own_token: tuple[Token, str]) -> None:
    token, label = own_token
    token.sign(label, b"warm up", ECDSA)
    broken = list(token._idle)
    for pooled in broken:
        pooled.session.close()  # behind the layer's back
    _verify_ecdsa(token, label, token.sign(label, b"after", ECDSA), b"after")
    assert not any(p is q for p in token._idle for q in broken)


def test_lost_login_is_restored(own_token: tuple[Token, str]) -> None:
    token, label = own_token
    token.sign(label, b"warm up", ECDSA)
    module = _module_for(token.config.module_path)
    anchor = module.logins[token.label].anchor
    assert anchor is not None
    # Every session of the process gone, as after an HSM restart: the login goes with them.
    for pooled in token._idle:
        pooled.session.close()
    anchor.close()  # C_Logout + C_CloseSession
    _verify_ecdsa(token, label, token.sign(label, b"after", ECDSA), b"after")
    assert module.logins[token.label].anchor is not anchor


def test_module_finalised_behind_our_back(own_token: tuple[Token, str]) -> None:
    token, label = own_token
    token.sign(label, b"warm up", ECDSA)
    module = _module_for(token.config.module_path)
    generation = module.generation
    pkcs11.lib(token.config.module_path).finalize()  # CKR_CRYPTOKI_NOT_INITIALIZED from now on
    _verify_ecdsa(token, label, token.sign(label, b"after", ECDSA), b"after")
    assert module.generation > generation


# python-pkcs11's OperationContext.__del__ may later try to end an operation on a session that the
# finalize below closed, and raises from __del__; that is the library tidying up, not a failure.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_threads_recover_together_with_one_reinitialisation(
    own_token: tuple[Token, str],
) -> None:
    token, label = own_token
    token.sign(label, b"warm up", ECDSA)
    module = _module_for(token.config.module_path)
    generation = module.generation
    halfway = threading.Event()
    signed = 0
    failures: list[str] = []

    def work(n: int) -> None:
        nonlocal signed
        try:
            for i in range(40):
                data = f"{n}/{i}".encode()
                _verify_ecdsa(token, label, token.sign(label, data, ECDSA), data)
                signed += 1
                if signed >= 40:
                    halfway.set()
        except BaseException:  # reported by the main thread
            failures.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    assert halfway.wait(timeout=30)
    with module.lock:  # between two operations: every session ends at once
        pkcs11.lib(token.config.module_path).finalize()
    for thread in threads:
        thread.join()
    assert failures == []
    assert module.generation == generation + 1  # one thread re-initialised, the others followed


def test_session_lost_when_reopening_fails(own_token: tuple[Token, str], tmp_path: Path) -> None:
    token, label = own_token
    token.sign(label, b"warm up", ECDSA)
    conf = os.environ["SOFTHSM2_CONF"]
    lib = pkcs11.lib(token.config.module_path)
    try:
        # SoftHSM reads its configuration in C_Initialize: with none, the re-initialisation
        # that follows the loss of the module state fails.
        os.environ["SOFTHSM2_CONF"] = str(tmp_path / "missing.conf")
        lib.finalize()
        with pytest.raises(SessionLost, match=token.label) as caught:
            token.sign(label, b"never", ECDSA)
        assert "re-initialising the module failed" in str(caught.value)
    finally:
        os.environ["SOFTHSM2_CONF"] = conf
    _verify_ecdsa(token, label, token.sign(label, b"recovered", ECDSA), b"recovered")


# -- errors -----------------------------------------------------------------------------------


def test_wrong_pin_refused_by_the_token(softhsm: SoftHSMSetup) -> None:
    label, pin = softhsm.new_token("pin")
    wrong = secrets.token_hex(8)
    token = Token(HSMConfig(module_path=softhsm.module, token_label=label, pin=wrong))
    with pytest.raises(WrongPin, match="rejected the PIN") as caught:
        token.has_key("any")
    assert wrong not in str(caught.value)
    assert pin not in str(caught.value)


def test_wrong_pin_on_a_token_this_process_is_logged_in_to(
    token: Token, keys: dict[KeyAlgorithm, str]
) -> None:
    # Login state is per process: a second Token with a wrong PIN must not ride on it.
    token.sign(keys[KeyAlgorithm.EC_P256], b"logged in", ECDSA)
    wrong = secrets.token_hex(8)
    impostor = Token(
        HSMConfig(module_path=token.config.module_path, token_label=token.label, pin=wrong)
    )
    with pytest.raises(WrongPin, match="differs") as caught:
        impostor.sign(keys[KeyAlgorithm.EC_P256], b"impostor", ECDSA)
    assert wrong not in str(caught.value)
    assert token.config.pin not in str(caught.value)


def test_unknown_token_label(softhsm: SoftHSMSetup) -> None:
    label = f"absent-{secrets.token_hex(4)}"
    token = Token(HSMConfig(module_path=softhsm.module, token_label=label, pin="irrelevant"))
    with pytest.raises(TokenNotFound, match=f"{label}.*ca-service init"):
        token.find_key("any")


def test_bad_module_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "libmissing.so")
    with pytest.raises(PKCS11ModuleNotFound, match=r"libmissing\.so.*install softhsm2"):
        Token(HSMConfig(module_path=missing, token_label="t", pin="x")).has_key("k")
    not_a_library = tmp_path / "libjunk.so"
    not_a_library.write_text("not a shared library\n")
    with pytest.raises(PKCS11ModuleNotFound, match=r"libjunk\.so.*CA_PKCS11_MODULE"):
        Token(HSMConfig(module_path=str(not_a_library), token_label="t", pin="x")).has_key("k")


def test_unknown_key_label(token: Token, keys: dict[KeyAlgorithm, str]) -> None:
    with pytest.raises(KeyNotFound, match="nothing-here"):
        token.sign("nothing-here", b"data", ECDSA)
    with pytest.raises(KeyNotFound, match="nothing-here"):
        token.public_key("nothing-here")
