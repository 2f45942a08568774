"""A per-process, thread-safe handle on one PKCS#11 token.

PKCS#11 state (library initialisation, login, sessions) belongs to a process. A gunicorn worker
is forked from a master that may already have touched the token: the child must call
C_Initialize again and must not use or close the parent's sessions. Real HSMs refuse a parent's
session in a child; SoftHSM tolerates it, which is why the PID check below is explicit rather
than left to luck.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from hsm.config import HSMConfig
from hsm.errors import (
    DuplicateKeyLabel,
    HSMUnavailable,
    KeyNotFound,
    PinLocked,
    PKCS11ModuleNotFound,
    SessionLost,
    TokenNotFound,
    WrongPin,
)
from hsm.keys import KeyAlgorithm, SignatureScheme

T = TypeVar("T")
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Errors after which a session cannot be used again; the pool reopens (once) and retries.
_LOST = (
    pkcs11.exceptions.SessionHandleInvalid,
    pkcs11.exceptions.ObjectHandleInvalid,
    pkcs11.exceptions.KeyHandleInvalid,
    pkcs11.exceptions.SessionClosed,
    pkcs11.exceptions.DeviceRemoved,
    pkcs11.exceptions.TokenNotPresent,
    pkcs11.exceptions.UserNotLoggedIn,
    pkcs11.exceptions.DeviceError,
)

# DER DigestInfo prefixes (RFC 8017 §9.2 note 1) for RSA PKCS#1 v1.5 over a host-side digest.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}
_PSS_PARAMS = {
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256, 32),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384, 48),
}

# Which process initialised each loaded module, and which (pid, module, token) pairs are logged
# in: login state is per application and token, shared by every session (and Token object).
_initialised_in: dict[str, int] = {}
_logged_in: set[tuple[int, str, str]] = set()
_process_lock = threading.Lock()

# python-pkcs11 calls C_Initialize(NULL), which promises the module that the application will
# not call it from several threads at once (PKCS#11 §5.4; SoftHSM aborts when we do). So every
# call into a module is serialised by that module's lock. Sessions still come from a pool: each
# keeps its own cached key handles and operation state, and a lost one is replaced alone.
# Lock order: a Token's pool condition, then the module lock; never the other way round.
_module_locks: dict[str, threading.RLock] = {}


def _module_lock(path: str) -> threading.RLock:
    with _process_lock:
        lock = _module_locks.get(path)
        if lock is None:
            lock = _module_locks[path] = threading.RLock()
        return lock


def _reset_locks_in_child() -> None:
    # A lock held by another thread of the parent at fork time would stay held for ever.
    global _process_lock  # noqa: PLW0603  (the lock object itself must be replaced after fork)
    _process_lock = threading.Lock()
    for path in list(_module_locks):
        _module_locks[path] = threading.RLock()


os.register_at_fork(after_in_child=_reset_locks_in_child)


@dataclass(frozen=True)
class KeyHandle:
    """A key pair in the token, found by label."""

    label: str
    key_id: bytes
    algorithm: KeyAlgorithm


@dataclass
class _PooledSession:
    session: Any
    private_keys: dict[str, Any] = field(default_factory=dict)


class Token:
    """Thread-safe access to one token: key generation, lookup and signing."""

    def __init__(self, config: HSMConfig) -> None:
        self.config = config
        self._cond = threading.Condition()
        os.register_at_fork(after_in_child=self._reset_condition_in_child)
        self._pid: int | None = None
        self._token: Any = None
        self._idle: list[_PooledSession] = []
        self._open = 0
        # Sessions inherited from a parent process: kept referenced and never closed.
        self._abandoned: list[_PooledSession] = []
        self._public_keys: dict[str, PublicKey] = {}
        self._handles: dict[str, KeyHandle] = {}

    # -- process and session management -----------------------------------------------------

    def _reset_condition_in_child(self) -> None:
        self._cond = threading.Condition()

    @property
    def _library_lock(self) -> threading.RLock:
        return _module_lock(self.config.module_path)

    @property
    def label(self) -> str:
        return self.config.token_label

    def _load_library(self) -> Any:
        path = self.config.module_path
        if not Path(path).is_file():
            raise PKCS11ModuleNotFound(path, "no such file")
        try:
            lib = pkcs11.lib(path)
        except (OSError, RuntimeError) as exc:
            raise PKCS11ModuleNotFound(path, str(exc) or type(exc).__name__) from None
        pid = os.getpid()
        with _process_lock:
            owner = _initialised_in.get(path)
            if owner is not None and owner != pid:
                # Forked child: the parent's C_Initialize does not carry over (PKCS#11 §5.1).
                lib.reinitialize()
            _initialised_in[path] = pid
        return lib

    def _ensure_process(self) -> None:
        """(Re)attach to the token in this process; called with ``_cond`` held."""
        pid = os.getpid()
        if self._pid == pid and self._token is not None:
            return
        if self._pid is not None and self._pid != pid:
            self._abandoned.extend(self._idle)
            self._idle = []
            self._open = 0
            self._handles.clear()
        with self._library_lock:
            lib = self._load_library()
            try:
                self._token = lib.get_token(token_label=self.label)
            except pkcs11.exceptions.NoSuchToken:
                raise TokenNotFound(self.label) from None
            except pkcs11.exceptions.PKCS11Error as exc:
                raise HSMUnavailable(f"cannot reach token {self.label!r}: {exc!r}") from None
        self._pid = pid

    def _open_session(self) -> _PooledSession:
        with self._library_lock:
            return self._open_session_locked()

    def _open_session_locked(self) -> _PooledSession:
        key = (os.getpid(), self.config.module_path, self.label)
        try:
            if key in _logged_in:
                session = self._token.open(rw=True)
            else:
                try:
                    session = self._token.open(rw=True, user_pin=self.config.pin)
                except pkcs11.exceptions.UserAlreadyLoggedIn:
                    session = self._token.open(rw=True)
                _logged_in.add(key)
        except pkcs11.exceptions.PinIncorrect:
            raise WrongPin(self.label) from None
        except pkcs11.exceptions.PinLocked:
            raise PinLocked(self.label) from None
        except (pkcs11.exceptions.PinInvalid, pkcs11.exceptions.PinLenRange):
            raise WrongPin(self.label) from None
        except pkcs11.exceptions.PKCS11Error as exc:
            raise HSMUnavailable(f"cannot open a session on {self.label!r}: {exc!r}") from None
        return _PooledSession(session)

    @contextmanager
    def _borrow(self) -> Iterator[_PooledSession]:
        with self._cond:
            self._ensure_process()
            while not self._idle and self._open >= self.config.pool_size:
                self._cond.wait()
            if self._idle:
                pooled = self._idle.pop()
            else:
                pooled = self._open_session()
                self._open += 1
        lost = False
        try:
            yield pooled
        except _LOST:
            lost = True  # a broken session never goes back into the pool
            raise
        finally:
            with self._cond:
                if lost:
                    self._open -= 1
                else:
                    self._idle.append(pooled)
                self._cond.notify()

    def _forget_sessions(self) -> None:
        """Drop every pooled session and the login mark, so the next borrow logs in again."""
        with self._cond:
            for pooled in self._idle:
                # Already gone, most likely: that is why we are here.
                with self._library_lock, contextlib.suppress(pkcs11.exceptions.PKCS11Error):
                    pooled.session.close()
            self._open -= len(self._idle)
            self._idle = []
            _logged_in.discard((os.getpid(), self.config.module_path, self.label))

    def _run(self, operation: Callable[[_PooledSession], T]) -> T:
        """Run on a pooled session; a lost session is reopened once, then SessionLost."""
        try:
            with self._borrow() as pooled, self._library_lock:
                return operation(pooled)
        except _LOST:
            self._forget_sessions()
        try:
            with self._borrow() as pooled, self._library_lock:
                return operation(pooled)
        except _LOST as exc:
            self._forget_sessions()
            raise SessionLost(self.label, type(exc).__name__) from None

    def close(self) -> None:
        """Close this process's sessions (shutdown, tests)."""
        with self._cond:
            if self._pid != os.getpid():
                return
        self._forget_sessions()

    # -- keys ------------------------------------------------------------------------------

    @staticmethod
    def _find_private(pooled: _PooledSession, label: str) -> Any:
        key = pooled.private_keys.get(label)
        if key is None:
            try:
                key = pooled.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            except pkcs11.exceptions.NoSuchKey:
                raise KeyNotFound(label) from None
            except pkcs11.exceptions.MultipleObjectsReturned:
                raise DuplicateKeyLabel(label) from None
            pooled.private_keys[label] = key
        return key

    def has_key(self, label: str) -> bool:
        """Whether a private key with this label exists."""
        try:
            self.find_key(label)
        except KeyNotFound:
            return False
        return True

    def find_key(self, label: str) -> KeyHandle:
        """The key pair with this label.

        :raises KeyNotFound: when there is none.
        """
        cached = self._handles.get(label)
        if cached is not None:
            return cached

        def lookup(pooled: _PooledSession) -> KeyHandle:
            key = self._find_private(pooled, label)
            if key.key_type == KeyType.RSA:
                algorithm = KeyAlgorithm(f"rsa-{key.key_length}")
            else:
                params = key[Attribute.EC_PARAMS]
                algorithm = (
                    KeyAlgorithm.EC_P384
                    if params == encode_named_curve_parameters("secp384r1")
                    else KeyAlgorithm.EC_P256
                )
            return KeyHandle(label=label, key_id=bytes(key[Attribute.ID]), algorithm=algorithm)

        handle = self._run(lookup)
        self._handles[label] = handle
        return handle

    def generate_key(self, label: str, algorithm: KeyAlgorithm) -> KeyHandle:
        """Generate a non-extractable signing key pair inside the token.

        :raises DuplicateKeyLabel: when the label is taken.
        """
        if self.has_key(label):
            raise DuplicateKeyLabel(label)
        key_id = secrets.token_bytes(16)
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.SIGN_RECOVER: False,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        }
        public_template = {
            Attribute.TOKEN: True,
            Attribute.VERIFY: True,
            Attribute.VERIFY_RECOVER: False,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
            Attribute.DERIVE: False,
        }

        def generate(pooled: _PooledSession) -> None:
            session = pooled.session
            if algorithm.is_rsa:
                session.generate_keypair(
                    KeyType.RSA,
                    algorithm.rsa_bits,
                    id=key_id,
                    label=label,
                    store=True,
                    public_template={**public_template, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                    private_template=private_template,
                )
            else:
                params = session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(algorithm.curve_name)},
                    local=True,
                )
                params.generate_keypair(
                    id=key_id,
                    label=label,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )

        self._run(generate)
        handle = KeyHandle(label=label, key_id=key_id, algorithm=algorithm)
        self._handles[label] = handle
        return handle

    def public_key(self, label: str) -> PublicKey:
        """The public half as a cryptography key object."""
        cached = self._public_keys.get(label)
        if cached is not None:
            return cached

        def read(pooled: _PooledSession) -> PublicKey:
            try:
                key = pooled.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            except pkcs11.exceptions.NoSuchKey:
                raise KeyNotFound(label) from None
            if key.key_type == KeyType.RSA:
                return rsa.RSAPublicNumbers(
                    int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
                    int.from_bytes(key[Attribute.MODULUS], "big"),
                ).public_key()
            loaded = serialization.load_der_public_key(encode_ec_public_key(key))
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                raise HSMUnavailable(f"key {label!r} is not an EC key")
            return loaded

        public = self._run(read)
        self._public_keys[label] = public
        return public

    def private_key(self, label: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """A cryptography private-key object whose operations happen in the token."""
        from hsm.signers import HSMECPrivateKey, HSMRSAPrivateKey

        public = self.public_key(label)
        if isinstance(public, rsa.RSAPublicKey):
            return HSMRSAPrivateKey(self, label, public)
        return HSMECPrivateKey(self, label, public)

    # -- signing ---------------------------------------------------------------------------

    def sign(self, label: str, data: bytes, scheme: SignatureScheme) -> bytes:
        """Sign ``data``; ECDSA signatures are returned DER-encoded."""
        return self.sign_digest(label, hashlib.new(scheme.hash_name, data).digest(), scheme)

    def sign_digest(self, label: str, digest: bytes, scheme: SignatureScheme) -> bytes:
        """Sign a digest made on the host.

        Hashing on the host is what HSM clients usually do: it sends the token 32-48 bytes
        instead of the whole to-be-signed structure, and uses only the raw mechanisms
        (CKM_ECDSA, CKM_RSA_PKCS, CKM_RSA_PKCS_PSS) that every PKCS#11 device implements.
        """
        if len(digest) != hashlib.new(scheme.hash_name).digest_size:
            raise ValueError(f"digest length {len(digest)} does not match {scheme.value}")
        name = scheme.hash_name
        if scheme in (SignatureScheme.ECDSA_SHA256, SignatureScheme.ECDSA_SHA384):
            mechanism, param, payload = Mechanism.ECDSA, None, digest
        elif scheme in (SignatureScheme.RSA_PSS_SHA256, SignatureScheme.RSA_PSS_SHA384):
            # Explicit parameters (hash, MGF1 with the same hash, salt = digest length) rather
            # than the library's defaults, which are SHA-1 based.
            mechanism, param, payload = Mechanism.RSA_PKCS_PSS, _PSS_PARAMS[name], digest
        else:
            mechanism, param, payload = Mechanism.RSA_PKCS, None, _DIGEST_INFO[name] + digest

        def sign(pooled: _PooledSession) -> bytes:
            key = self._find_private(pooled, label)
            raw: bytes = key.sign(payload, mechanism=mechanism, mechanism_param=param)
            return raw

        try:
            signature = self._run(sign)
        except pkcs11.exceptions.PKCS11Error as exc:
            raise HSMUnavailable(f"the token refused to sign with {label!r}: {exc!r}") from None
        if mechanism == Mechanism.ECDSA:
            half = len(signature) // 2
            return encode_dss_signature(
                int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
            )
        return signature


def rescan_tokens(module_path: str) -> None:
    """Re-initialise a loaded module so it sees tokens created since it was loaded.

    SoftHSM reads its token directory only at C_Initialize. Sessions of this process become
    invalid; every Token reopens them (and logs in again) on its next use.
    """
    with _module_lock(module_path):
        lib = pkcs11.lib(module_path)
        lib.reinitialize()
        _initialised_in[module_path] = os.getpid()
        for key in [k for k in _logged_in if k[1] == module_path]:
            _logged_in.discard(key)
